"""Files of a project resource (ML_MODELS, ML_CONFIGS, ML_RUNS) addressed by their path inside it.

The training layer keeps folders in plain project resources: one listing call tells what is
there, a folder goes up as one atomic zip upload (``upload_directory``: a reader sees all of it
or none), and files come down streamed to a temporary name, renamed when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import explain, reported_as
from xnat_ml.xnat.transfer import upload_directory
from xnat_ml.xnat.uris import project_uri, resource_uri, segment


def project_resource_uri(project: str, label: str) -> str:
    return resource_uri(project_uri(project), label)


def file_uri(project: str, label: str, path: str) -> str:
    quoted = "/".join(segment(part) for part in path.split("/"))
    return f"{project_resource_uri(project, label)}/files/{quoted}"


def list_paths(session: XNATSession, project: str, label: str) -> list[str]:
    """Every file's path inside the resource, sorted; none when the resource does not exist."""
    uri = f"{project_resource_uri(project, label)}/files"
    with reported_as(f"project {project} {label}"):
        listed = session.get(uri, query={"format": "json"}, accepted_status=[200, 404])
    if listed.status_code == 404:
        return []
    paths = []
    for row in listed.json()["ResultSet"]["Result"]:
        found = row.get("URI", "")
        path = found.split("/files/", 1)[1] if "/files/" in found else row.get("Name", "")
        paths.append(unquote(path))
    return sorted(p for p in paths if p)


def read_text(session: XNATSession, project: str, label: str, path: str) -> str:
    with reported_as(f"project {project} {label}/{path}"):
        return session.get(file_uri(project, label, path)).content.decode("utf-8")


def download(
    session: XNATSession, project: str, label: str, paths: Iterable[str], prefix: str, dest: Path
) -> list[Path]:
    """Download ``paths`` (each under ``prefix/``) into ``dest`` as their path after the prefix;
    each file is written to a temporary name and renamed when complete."""
    written = []
    for path in paths:
        relative = path[len(prefix) :].lstrip("/") if prefix else path
        parts = relative.split("/")
        if not relative or any(p in ("", ".", "..") for p in parts):
            raise XnatMlError(f"project {project} {label}/{path}: not a usable file path")
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        uri = session._format_uri(file_uri(project, label, path))
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".part-", delete=False) as tmp:
            try:
                with reported_as(f"project {project} {label}/{path}"):
                    with session.interface.get(uri, stream=True, timeout=(10, 300)) as answer:
                        if answer.status_code != 200:
                            raise XnatMlError(
                                f"project {project} {label}/{path}: "
                                f"{explain(answer.status_code, answer.text)}"
                            )
                        for chunk in answer.iter_content(1 << 20):
                            tmp.write(chunk)
                tmp.close()
                os.replace(tmp.name, target)
            except BaseException:
                Path(tmp.name).unlink(missing_ok=True)
                raise
        written.append(target)
    return written


def upload_tree(
    session: XNATSession, project: str, label: str, files: dict[str, Path], content: str
) -> None:
    """Upload ``files`` (path inside the resource -> local file) in one atomic zip upload.

    Files are hard-linked (copied across file systems) into a staging folder, so a file that
    is replaced on disk meanwhile is uploaded as it was when linked, whole."""
    with tempfile.TemporaryDirectory(prefix="xnat-ml-upload-") as tmp:
        for path, source in files.items():
            target = Path(tmp).joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        upload_directory(session, project_uri(project), label, tmp, content=content)
