"""One writer per version: ``<name>/v<N>/`` of a project resource is claimed before it is written.

A writer claims N by creating ``<name>/v<N>/claim.json`` (user, a random token, time) with a PUT
*without* ``overwrite``: the server creates the file, or answers 409 because it exists (XNAT
does; the embedded server checks and catalogues in one write transaction), so of two writers
racing for N exactly one gets it and the other tries N+1. Only then do the version's files go
up, into the claimed folder. Listings count a version once its own files are there (a model's
card, a dataset's ``dataset_0.json``); a claim without them keeps its number taken.

A writer that loses the server after claiming (its answer lost, the server gone) leaves a
pending record on this machine: the token, the number and a fingerprint of what it was storing.
The next attempt to store the same thing under the same name finds the folder whose claim holds
that token, uploads whatever of its files is missing, and reports that version instead of
writing another. While its writer runs, a record is locked (``flock``), so a concurrent writer
of identical content never takes it over.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.queries import resource_paths
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.transfer import transient, upload_files, with_retries
from xnat_ml.xnat.uris import project_uri, resource_uri, segment

log = logging.getLogger(__name__)

CLAIM_FILE = "claim.json"
PENDING_FOLDER = "claims"  # in the user's cache root: records of claims not yet done
_NUMBER = re.compile(r"[1-9][0-9]*")
MAX_TRIES = 1000  # numbers tried before giving up: only a server that refuses every claim


@dataclass(frozen=True)
class VersionFolders:
    """Where the versions of one name live: ``<label>/<name>/v<N>/`` of a project."""

    project: str
    label: str  # ML_MODELS, ML_DATASETS
    name: str
    content: str  # the resource's content, should the first claim create it
    format: str | None = None

    @property
    def what(self) -> str:
        return f"project {self.project} {self.label}/{self.name}"

    @property
    def uri(self) -> str:
        return resource_uri(project_uri(self.project), self.label)

    def folder(self, number: int) -> str:
        return f"{self.name}/v{number}"

    def claim_uri(self, number: int) -> str:
        return f"{self.uri}/files/{segment(self.name)}/v{number}/{CLAIM_FILE}"


def numbered_folders(paths: list[str], name: str) -> dict[int, set[str]]:
    """Files per ``<name>/v<N>/`` folder (claimed or complete) among resource paths."""
    found: dict[int, set[str]] = {}
    prefix = f"{name}/v"
    for path in paths:
        if not path.startswith(prefix):
            continue
        number, _, rest = path[len(prefix):].partition("/")
        if rest and _NUMBER.fullmatch(number):
            found.setdefault(int(number), set()).add(rest)
    return found


def fingerprint(files: dict[str, Path], extra: str = "") -> str:
    """A digest of files (path in the version -> local file) and ``extra`` text: what a retry
    must match to take over a lost attempt's version."""
    digest = hashlib.sha256(extra.encode())
    for path, local in sorted(files.items()):
        digest.update(f"\0{path}\0".encode())
        with open(local, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def store_version(
    session: XNATSession,
    where: VersionFolders,
    files_for: Callable[[int], dict[str, Path]],
    content_id: str,
    cache_root: Path,
) -> int:
    """Claim the next free number of ``where`` and upload ``files_for(number)`` (path in the
    version -> local file) into it; or finish the version a lost attempt with the same
    ``content_id`` claimed. Pending records live in ``cache_root/claims/``. The number stored."""
    key = _key(session, where, content_id)
    pending = cache_root / PENDING_FOLDER
    pending.mkdir(parents=True, exist_ok=True)
    for record_path in sorted(pending.glob(f"{key}-*.json")):
        with _lost_record(record_path) as record:
            if record is not None:
                found = _finish_lost(session, where, record, files_for)
                record_path.unlink(missing_ok=True)
                if found is not None:
                    return found
    with _new_record(pending, key) as record:
        try:
            number = _claim(session, where, record)
        except XnatMlError as exc:
            if not transient(exc):  # refused: no claim of ours can be there
                record.path.unlink()
            raise
        _upload(session, where, number, files_for(number))
        record.path.unlink()
    return number


def forget_lost(
    session: XNATSession, where: VersionFolders, content_id: str, cache_root: Path
) -> None:
    """Drop the records of lost attempts to store ``content_id``, for a caller that found what
    they stored already there (a dataset build that found nothing changed)."""
    pending = cache_root / PENDING_FOLDER
    for record_path in pending.glob(f"{_key(session, where, content_id)}-*.json"):
        with _lost_record(record_path) as record:
            if record is not None:
                record_path.unlink(missing_ok=True)


def _key(session: XNATSession, where: VersionFolders, content_id: str) -> str:
    """What names the records of one writer's attempts: server, user, place and content."""
    return hashlib.sha256(json.dumps(
        [session.server, session.logged_in_user, where.project, where.label, where.name,
         content_id]).encode()).hexdigest()  # fmt: skip


class _Record:
    """A pending claim, locked by its writer: its token and the number last tried."""

    def __init__(self, path: Path, handle: IO[bytes], token: str, number: int = 0) -> None:
        self.path, self.handle, self.token, self.number = path, handle, token, number

    def trying(self, number: int) -> None:
        self.number = number
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps({"token": self.token, "number": number}).encode())
        self.handle.flush()
        os.fsync(self.handle.fileno())


@contextmanager
def _new_record(pending: Path, key: str) -> Iterator[_Record]:
    """A new record, locked before it gets its name, so no other writer ever takes it over."""
    token = secrets.token_hex(16)
    fd, temporary = tempfile.mkstemp(dir=pending, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        record = _Record(pending / f"{key}-{token}.json", handle, token)
        record.trying(0)
        os.replace(temporary, record.path)
        yield record


@contextmanager
def _lost_record(path: Path) -> Iterator[_Record | None]:
    """The record at ``path``, locked; None while its writer still runs (or it is gone)."""
    try:
        handle = open(path, "r+b")  # noqa: SIM115 - closed below, after the lock is used
    except FileNotFoundError:
        yield None
        return
    with handle:
        record = None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            saved = json.loads(handle.read())
            record = _Record(path, handle, str(saved["token"]), int(saved["number"]))
        except BlockingIOError:
            pass
        except (ValueError, KeyError, TypeError):
            log.warning("pending claim %s: unreadable, left out", path)
            path.unlink(missing_ok=True)
        yield record


def _claim(session: XNATSession, where: VersionFolders, record: _Record) -> int:
    """Create ``<name>/v<N>/claim.json`` for the first free N; that N."""
    taken = numbered_folders(resource_paths(session, where.uri, where.what), where.name)
    number = max(taken, default=0) + 1
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    body = json.dumps({"user": session.logged_in_user, "token": record.token, "time": stamp})
    query = {"content": where.content}
    if where.format:
        query["format"] = where.format

    def put(number: int) -> int:
        return session.put(where.claim_uri(number), data=body.encode(), query=query,
                           headers={"Content-Type": "application/octet-stream"},
                           accepted_status=[200, 201, 409]).status_code  # fmt: skip

    for _ in range(MAX_TRIES):
        record.trying(number)
        status = with_retries(f"{where.what} v{number}", lambda n=number: put(n), retries=3)
        # 409: someone's claim is there, or ours whose answer was lost and the retry refused
        if status != 409 or _claim_token(session, where, number) == record.token:
            return number
        number += 1
    raise XnatMlError(f"{where.what}: no version number could be claimed ({MAX_TRIES} tried)")


def _claim_token(session: XNATSession, where: VersionFolders, number: int) -> str | None:
    with reported_as(f"{where.what} v{number} {CLAIM_FILE}"):
        answer = session.get(where.claim_uri(number), accepted_status=[200, 404])
    if answer.status_code == 404:
        return None
    try:
        return json.loads(answer.content)["token"]
    except (ValueError, KeyError, TypeError):
        return None


def _finish_lost(
    session: XNATSession, where: VersionFolders, record: _Record,
    files_for: Callable[[int], dict[str, Path]],
) -> int | None:
    """The number of a lost attempt's version, its missing files uploaded; None when that
    attempt never claimed a number."""
    number = record.number
    if not number or _claim_token(session, where, number) != record.token:
        return None
    present = numbered_folders(resource_paths(session, where.uri, where.what),
                               where.name).get(number, set())  # fmt: skip
    missing = {path: local for path, local in files_for(number).items() if path not in present}
    if missing:
        _upload(session, where, number, missing)
    log.info("%s v%d: finished the version a lost attempt claimed", where.what, number)
    return number


def _upload(session: XNATSession, where: VersionFolders, number: int,
            files: dict[str, Path]) -> None:  # fmt: skip
    folder = where.folder(number)
    upload_files(session, project_uri(where.project), where.label,
                 {f"{folder}/{path}": local for path, local in files.items()},
                 format=where.format, content=where.content)  # fmt: skip

