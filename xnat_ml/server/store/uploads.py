"""Uploads as they arrive: the request's body staged to disk (raw or the first multipart file),
and an uploaded archive unpacked under the server's limits, with the HTTP error each failure
deserves (400 corrupt or unsafe, 413 too large, 507 no room). Shared by files, DICOM import
and ROI collections."""

from __future__ import annotations

from pathlib import Path

from flask import current_app, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from xnat_ml.server.formats.zipfiles import (
    ArchiveError,
    ArchiveNoRoom,
    ArchiveTooLarge,
    ExtractLimits,
    extract_archive,
)
from xnat_ml.server.store.filestore import DiskFull, FileStore, StoredFile


def staged_upload(store: FileStore) -> tuple[Path, int, str]:
    """The request's file, staged: the raw body, or the first file of a multipart form."""
    try:
        if request.mimetype == "multipart/form-data":
            store.check_room(request.content_length or 0, "the upload")
            upload = next(iter(request.files.values()), None)
            if upload is None:
                raise BadRequest("Multipart upload carries no file part.")
            return store.stage_stream(upload.stream)
        return store.stage_stream(request.stream, request.content_length)
    except OSError as exc:
        raise BadRequest(f"Upload interrupted: {exc}.") from exc


def unpack_upload(staged: Path, unpacked: Path, name: str, what: str) -> list[StoredFile]:
    """Extract an uploaded archive under the server's limits: 400 when it is corrupt or unsafe,
    413 when it expands too far (EXTRACT_MAX_BYTES, EXTRACT_MAX_FILES), 507 past the free disk."""
    limits = ExtractLimits(
        max_bytes=current_app.config["EXTRACT_MAX_BYTES"],
        max_members=current_app.config["EXTRACT_MAX_FILES"],
    )
    try:
        return extract_archive(staged, unpacked, name, limits)
    except ArchiveNoRoom as exc:
        raise DiskFull(f"{what}: {exc}") from exc
    except ArchiveTooLarge as exc:
        raise RequestEntityTooLarge(f"{what}: {exc}") from exc
    except ArchiveError as exc:
        raise BadRequest(f"{what}: {exc}") from exc
