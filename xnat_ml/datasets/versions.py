"""Dataset versions in the project resource ML_DATASETS: ``<name>/v<N>/`` with four files.

Every build that changes anything is a new version; old ones stay. Its number is claimed on the
server first (``claim.json``, xnat/claims.py), so concurrent builds get distinct versions; its
files then go up in one atomic directory upload, so a reader sees all four files or none.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.bounded_json import load_json
from xnat_ml.datasets.cache import default_root
from xnat_ml.datasets.changes import Change, version_changes
from xnat_ml.datasets.datalist import dumps
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import DATASETS_RESOURCE
from xnat_ml.xnat.claims import VersionFolders, forget_lost, store_version
from xnat_ml.xnat.queries import resource_paths
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import project_uri, resource_uri, segment

DEFINITION_FILE = "definition.json"
DATALIST_FILE = "dataset_0.json"
REPORT_FILE = "report.json"
REPORT_MD_FILE = "report.md"
VERSION_FILES = (DEFINITION_FILE, DATALIST_FILE, REPORT_FILE, REPORT_MD_FILE)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION_PATH = re.compile(r"([^/]+)/v([1-9][0-9]*)/([^/]+)")


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    files: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"{self.name}/v{self.number}"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise XnatMlError(
            f"dataset name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def datasets_uri(project: str) -> str:
    return resource_uri(project_uri(project), DATASETS_RESOURCE)


def list_versions(session: XNATSession, project: str) -> dict[str, list[Version]]:
    """Every complete version per dataset name, oldest first (one listing call); a claimed
    folder whose files are not all there is none."""
    files: dict[tuple[str, int], set[str]] = {}
    what = f"project {project} {DATASETS_RESOURCE}"
    for path in resource_paths(session, datasets_uri(project), what):
        match = _VERSION_PATH.fullmatch(path)
        if match:
            files.setdefault((match[1], int(match[2])), set()).add(match[3])
    out: dict[str, list[Version]] = {}
    for (name, number), present in sorted(files.items()):
        if set(VERSION_FILES) <= present:
            out.setdefault(name, []).append(Version(name, number, tuple(sorted(present))))
    return out


def find_version(
    session: XNATSession, project: str, name: str, number: int | None = None
) -> Version:
    return pick_version(list_versions(session, project).get(name, []), project, name, number)


def pick_version(
    versions: list[Version], project: str, name: str, number: int | None = None
) -> Version:
    """Version ``number`` (default: the latest) among dataset ``name``'s ``versions``, for a
    caller that has the listing already."""
    if not versions:
        raise XnatMlError(f"dataset {name}: no version in project {project}'s {DATASETS_RESOURCE}")
    if number is None:
        return versions[-1]
    for version in versions:
        if version.number == number:
            return version
    known = ", ".join(f"v{v.number}" for v in versions)
    raise XnatMlError(f"dataset {name}: no version v{number} in project {project} ({known})")


def read_file(session: XNATSession, project: str, version: Version, file: str) -> str:
    uri = f"{datasets_uri(project)}/files/{segment(version.name)}/v{version.number}/{file}"
    with reported_as(f"dataset {version.name} v{version.number} {file}"):
        return session.get(uri).content.decode("utf-8")


def read_json(session: XNATSession, project: str, version: Version, file: str) -> Any:
    text = read_file(session, project, version, file)
    return load_json(text, f"dataset {version.name} v{version.number} {file}")


def write_version(
    session: XNATSession, project: str, name: str, contents: dict[str, str]
) -> Version:
    """Upload ``contents`` (file name → text) as ``<name>/v<N>/`` in one atomic upload, N the
    next number this writer claims on the server (xnat/claims.py). A retry of the same contents
    after the server was lost meanwhile finishes and returns the version its lost attempt
    claimed."""
    with scratch.temporary("dataset-") as tmp:
        files = {}
        for file, text in contents.items():
            files[file] = Path(tmp) / file
            files[file].write_text(text, encoding="utf-8")
        number = store_version(session, _folders(project, name), lambda _: files,
                               _content_id(contents), default_root())  # fmt: skip
    return Version(name, number, tuple(sorted(contents)))


def forget_lost_writes(session: XNATSession, project: str, name: str,
                       contents: dict[str, str]) -> None:  # fmt: skip
    """A build found ``contents`` already stored: a lost attempt to store them has nothing left
    to finish."""
    forget_lost(session, _folders(project, name), _content_id(contents), default_root())


def _folders(project: str, name: str) -> VersionFolders:
    return VersionFolders(project, DATASETS_RESOURCE, name, content="ML_DATASET", format="JSON")


def _content_id(contents: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest()


def definition_text(doc: Any) -> str:
    """The stored definition: canonical JSON of what the user gave."""
    return dumps(doc)


def changes_before(
    session: XNATSession, project: str, version: Version, versions: list[Version]
) -> tuple[list[Change], int] | None:
    """What ``version`` changed against the one before it among the dataset's ``versions``, and
    that version's number; None for a first version."""
    earlier = [v for v in versions if v.number < version.number]
    if not earlier:
        return None
    before, after = (read_json(session, project, v, DATALIST_FILE) for v in (earlier[-1], version))
    return version_changes(before, after), earlier[-1].number
