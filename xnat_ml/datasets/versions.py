"""Dataset versions in the project resource ML_DATASETS: ``<name>/v<N>/`` with four files.

Every build that changes anything is a new version; old ones stay. A version is written with one
atomic directory upload, so a reader sees all four files or none.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml.bounded_json import load_json
from xnat_ml.datasets.datalist import dumps
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import DATASETS_RESOURCE
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.transfer import upload_directory
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
    """Every complete version per dataset name, oldest first (one listing call)."""
    listed = session.get(f"{datasets_uri(project)}/files", query={"format": "json"},
                         accepted_status=[200, 404])  # fmt: skip
    if listed.status_code == 404:
        return {}
    files: dict[tuple[str, int], set[str]] = {}
    for row in listed.json()["ResultSet"]["Result"]:
        uri = row.get("URI", "")
        path = uri.split("/files/", 1)[1] if "/files/" in uri else row.get("Name", "")
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
    versions = list_versions(session, project).get(name, [])
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
    session: XNATSession, project: str, name: str, number: int, contents: dict[str, str]
) -> Version:
    """Upload ``contents`` (file name → text) as ``<name>/v<number>/`` in one atomic upload."""
    with tempfile.TemporaryDirectory(prefix="xnat-ml-dataset-") as tmp:
        folder = Path(tmp) / name / f"v{number}"
        folder.mkdir(parents=True)
        for file, text in contents.items():
            (folder / file).write_text(text, encoding="utf-8")
        upload_directory(session, project_uri(project), DATASETS_RESOURCE, tmp,
                         format="JSON", content="ML_DATASET")  # fmt: skip
    return Version(name, number, tuple(sorted(contents)))


def definition_text(doc: Any) -> str:
    """The stored definition: canonical JSON of what the user gave."""
    return dumps(doc)
