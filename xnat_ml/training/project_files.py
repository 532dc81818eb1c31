"""Files of a project resource (ML_MODELS, ML_CONFIGS, ML_RUNS) addressed by their path inside it.

The training layer keeps folders in plain project resources: one listing call tells what is
there, a folder goes up as one atomic zip upload (``upload_directory``: a reader sees all of it
or none), and files come down streamed to a temporary name, renamed when complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.queries import resource_paths
from xnat_ml.xnat.responses import explain, reported_as
from xnat_ml.xnat.transfer import upload_files
from xnat_ml.xnat.uris import project_uri, resource_uri, segment


def project_resource_uri(project: str, label: str) -> str:
    return resource_uri(project_uri(project), label)


def file_uri(project: str, label: str, path: str) -> str:
    quoted = "/".join(segment(part) for part in path.split("/"))
    return f"{project_resource_uri(project, label)}/files/{quoted}"


def list_paths(session: XNATSession, project: str, label: str) -> list[str]:
    """Every file's path inside the resource, sorted; none when the resource does not exist."""
    return resource_paths(session, project_resource_uri(project, label),
                          f"project {project} {label}")  # fmt: skip


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
    """Upload ``files`` (path inside the resource -> local file) in one atomic zip upload."""
    upload_files(session, project_uri(project), label, files, content=content)
