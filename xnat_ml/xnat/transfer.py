"""Moving whole resources: streamed zip download, atomic and idempotent directory upload.

Upload sends the directory as one zip with `extract=true&overwrite=true`: the server unpacks it
in one step, so readers see the old resource or the new one, never a half-filled one, and a
retry after a lost answer gives the same result as the first try.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
from xnat import exceptions as xnat_exceptions
from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.archives import extract_zip, zip_directory
from xnat_ml.xnat.queries import list_resources
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import path_in_resource, resource_uri

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures worth another try: the request may not have reached the server, or the answer was
# lost. Safe only because every transfer here is idempotent.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_TRANSIENT_STATUS = {502, 503, 504}
UPLOAD_NAME = "upload.zip"  # the server unpacks it (extract=true) and keeps only its content


def transient(exc: XnatMlError) -> bool:
    """Whether ``exc`` is the server being out of reach (or overloaded), not its refusal."""
    cause = exc.__cause__
    return isinstance(cause, _TRANSIENT) or (
        isinstance(cause, xnat_exceptions.XNATResponseError)
        and cause.status_code in _TRANSIENT_STATUS
    )


def with_retries(what: str, attempt: Callable[[], T], retries: int) -> T:
    number = 1
    while True:
        try:
            with reported_as(what):
                return attempt()
        except XnatMlError as exc:
            if not transient(exc) or number >= retries:
                raise
            log.warning("%s; retrying (%d of %d)", exc, number, retries - 1)
            time.sleep(min(2.0 ** (number - 1), 10.0))
            number += 1


def download_resource(
    session: XNATSession, resource_uri: str, dest_dir: str | Path, retries: int = 3
) -> list[Path]:
    """Download every file of a resource into `dest_dir`, keeping its sub-folders; the files.

    The zip is streamed to disk (never held in memory), then extracted safely: `dest_dir` gains
    complete files only.
    """
    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".zip")
    with staging as tmp:

        def fetch() -> None:
            tmp.seek(0)
            tmp.truncate()
            session.download_stream(f"{resource_uri.rstrip('/')}/files", tmp, format="zip")
            tmp.flush()

        with_retries(f"XNAT resource {resource_uri}", fetch, retries)
        return extract_zip(Path(tmp.name), dest, rename=path_in_resource)


def upload_directory(
    session: XNATSession,
    parent_uri: str,
    label: str,
    src_dir: str | Path,
    format: str | None = None,
    content: str | None = None,
    tags: str | None = None,
    retries: int = 3,
    compress: bool = False,
) -> str:
    """Upload the files under `src_dir` as resource `label` of the object at `parent_uri`.

    One zip PUT extracted by the server: atomic to readers where the server extracts
    atomically (the embedded one does), idempotent on retry (same files, same bytes). Files
    already in the resource and absent from `src_dir` are kept, as XNAT does. If the resource
    did not exist and the upload fails, what a non-atomic server left behind is deleted.
    `compress=True` deflates the zip (worth it on slow links only). Returns the resource URI.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise XnatMlError(f"directory {src}: not found")
    uri = resource_uri(parent_uri, label)
    existed = any(row.get("label") == label for row in list_resources(session, parent_uri))
    query = {"extract": "true", "overwrite": "true"}
    query.update({k: v for k, v in (("format", format), ("content", content), ("tags", tags)) if v})
    with scratch.temporary("upload-") as tmp:
        zip_path = Path(tmp) / UPLOAD_NAME
        if zip_directory(src, zip_path, compress) == 0:
            raise XnatMlError(f"directory {src}: holds no files to upload")
        with open(zip_path, "rb") as body:

            def put() -> None:
                body.seek(0)
                session.put(
                    f"{uri}/files/{UPLOAD_NAME}",
                    data=body,
                    query=dict(query),
                    headers={"Content-Type": "application/octet-stream"},
                )

            try:
                with_retries(f"XNAT resource {uri}", put, retries)
            except XnatMlError:
                if not existed:
                    _remove_leftover(session, uri)
                raise
    return uri


def upload_files(
    session: XNATSession, parent_uri: str, label: str, files: dict[str, Path], **options
) -> str:
    """Upload ``files`` (path inside the resource -> local file) as ``upload_directory`` does.

    Files are hard-linked (copied across file systems) into a staging folder, so a file that
    is replaced on disk meanwhile is uploaded as it was when linked, whole."""
    with scratch.temporary("files-") as tmp:
        for path, source in files.items():
            target = Path(tmp).joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return upload_directory(session, parent_uri, label, tmp, **options)


def _remove_leftover(session: XNATSession, uri: str) -> None:
    """Best effort: a failure here must not hide the upload's own error."""
    try:
        session.delete(uri, query={"removeFiles": "true"}, accepted_status=[200, 204, 404])
    except (xnat_exceptions.XNATError, requests.RequestException) as exc:
        log.warning("XNAT resource %s: could not remove what a failed upload left (%s)", uri, exc)
