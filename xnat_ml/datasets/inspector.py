"""The ``inspect`` callback over XNAT, with as few requests as the archive allows.

The core calls ``inspect`` once per file, one session after another. Here every file a build
will inspect is settled first (``prefetch``), and ``inspect`` then answers from memory:

1. **Cache.** A file whose MD5 (from the catalogue listing) is in the inspection cache is not
   read at all (``cache.py``): a rebuild reads nothing, a build after adding sessions only the
   new files.
2. **Label files in bulk.** XNAT zips several objects' resources in one answer and splits
   session and object ids at commas (``/data/experiments/E1,E2/assessors/A1,A2/resources/
   LABELMAP/files?format=zip``), so label files come CHUNK_SESSIONS sessions per request. The
   zip is spooled to a temporary file (memory stays bounded) and its members are matched to
   the wanted files by MD5, whatever folder layout the server chose.
3. **Image grids from roi-to-mask's record.** ``roi-to-mask`` writes the image NIfTI itself and
   records its MD5, shape and affine in ``masks.json`` beside the label map (in the same zip).
   An image file whose catalogue MD5 equals a record's is byte for byte the file recorded, so
   its grid is taken from the record. Any other image costs one request: its header, by
   ``Range: bytes=0-4095`` (XNAT has no bulk form for parts of files).
4. What is left (no digest, a zip the server refused, a member missing) is read one request
   per file, WORKERS at a time.

A definition that picks ROI collections by origin needs it before matching: ``origins`` takes
it from the same records (their ``origin``), zipping the candidate label resources before the
match rather than after it, so the label files come in the same requests as without it.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

import requests
from xnat.session import XNATSession

from xnat_ml.bounded_json import load_json
from xnat_ml.datasets.cache import InspectionCache
from xnat_ml.datasets.definition import ORIGINS
from xnat_ml.datasets.nifti import HEADER_BYTES, nifti_info
from xnat_ml.datasets.records import FileEntry, FileRef, NiftiInfo, Scan
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import explain
from xnat_ml.xnat.uris import segment

WORKERS = 8
CHUNK_SESSIONS = 100  # sessions per zip request: ~3 KB of ids in the URL
MASKS_INDEX = "masks.json"  # roi-to-mask's index, with the "image" record
MAX_MEMBER = 1 << 30

Result = NiftiInfo | XnatMlError


class ArchiveInspector:
    """``inspect`` for ``build_dataset``, filled by ``prefetch``; counts what it did."""

    def __init__(
        self, session: XNATSession, cache: InspectionCache | None = None,
        chunk: int | None = None,
    ) -> None:  # fmt: skip
        self.session = session
        self.cache = cache
        self.chunk = chunk or CHUNK_SESSIONS
        self.results: dict[tuple[str, bool], Result] = {}
        self.records: dict[str, NiftiInfo] = {}  # image MD5 -> grid recorded by roi-to-mask
        self.recorded_origins: dict[str, str] = {}  # record (masks.json) MD5 -> its origin
        self.requests = 0
        self.bytes_read = 0
        self.from_cache = 0
        self.from_records = 0

    @staticmethod
    def _key(ref: FileRef) -> str:
        return ref.file.digest or ref.uri

    def prefetch(self, wanted: Iterable[tuple[FileRef, bool]]) -> None:
        """Settle every (file, want_values) not settled yet."""
        todo: dict[tuple[str, bool], FileRef] = {}
        for ref, values in wanted:
            key = (self._key(ref), values)
            if key in self.results or key in todo:
                continue
            digest = ref.file.digest
            cached = self.cache.get(digest, values) if self.cache and digest else None
            if cached is not None:
                self.results[key] = cached
                self.from_cache += 1
            else:
                todo[key] = ref
        self._read_zipped([ref for (_, values), ref in todo.items() if values])
        rest = []
        for (key, values), ref in todo.items():
            if (key, values) in self.results:
                continue
            record = None if values else self.records.get(ref.file.digest or "")
            if record is not None:
                self._settle(ref, False, record, "roi-to-mask record")
                self.from_records += 1
            else:
                rest.append((ref, values))
        with ThreadPoolExecutor(WORKERS) as pool:
            for (ref, values), result in zip(rest, pool.map(self._read, rest), strict=True):
                self._settle(ref, values, result, ref.uri)

    def origins(self, labels: Iterable[FileRef]) -> dict[tuple[str, str], str]:
        """(session id, collection id) -> origin, from the record beside each label file (from
        the cache, else from the label resources zipped, the label files settled on the way).
        A label without a record, or a record without a valid origin, is left out."""
        records: list[tuple[FileRef, str]] = []
        for ref in labels:
            entry = _record_entry(ref)
            if entry is not None and entry.digest:
                records.append((ref, entry.digest))
        todo = []
        for ref, digest in records:
            if digest in self.recorded_origins:
                continue
            cached = self.cache.origin(digest) if self.cache else None
            if cached in ORIGINS:
                self.recorded_origins[digest] = cached
            else:
                todo.append(ref)
        self._read_zipped(todo)
        return {
            (ref.session.id, ref.source.id): self.recorded_origins[digest]
            for ref, digest in records
            if digest in self.recorded_origins
        }

    def __call__(self, ref: FileRef, want_values: bool) -> NiftiInfo:
        key = (self._key(ref), want_values)
        if key not in self.results:
            self.prefetch([(ref, want_values)])
        result = self.results[key]
        if isinstance(result, XnatMlError):
            raise result
        return result

    def _settle(self, ref: FileRef, values: bool, result: Result, source: str) -> None:
        self.results[(self._key(ref), values)] = result
        if self.cache and ref.file.digest and isinstance(result, NiftiInfo):
            self.cache.put(ref.file.digest, result, source)

    # ------------------------------------------------------------------ label files, zipped

    def _read_zipped(self, refs: list[FileRef]) -> None:
        groups: dict[tuple[str, str], list[FileRef]] = defaultdict(list)
        for ref in refs:
            if ref.file.digest:
                kind = "scans" if isinstance(ref.source, Scan) else "assessors"
                groups[(kind, ref.resource.label)].append(ref)
        for (kind, label), group in groups.items():
            sessions = sorted({ref.session.id for ref in group})
            for start in range(0, len(sessions), self.chunk):
                chosen = set(sessions[start : start + self.chunk])
                part = [ref for ref in group if ref.session.id in chosen]
                ids = ",".join(segment(s) for s in sorted(chosen))
                owners = ",".join(segment(o) for o in sorted({ref.source.id for ref in part}))
                uri = f"/data/experiments/{ids}/{kind}/{owners}/resources/{segment(label)}/files"
                self._read_zip(uri, part)

    def _read_zip(self, uri: str, refs: list[FileRef]) -> None:
        """Take what the zip holds of ``refs`` (and every image record); a refused or broken
        zip leaves the files to be read one by one."""
        wanted = {ref.file.digest: ref for ref in refs}
        names = {PurePosixPath(ref.file.name).name for ref in refs}
        self.requests += 1
        try:
            with tempfile.TemporaryFile() as spool:
                with self.session.interface.get(
                    self.session._format_uri(uri), params={"format": "zip"}, stream=True,
                    timeout=(10, 300),
                ) as response:  # fmt: skip
                    if response.status_code != 200:
                        return
                    for chunk in response.iter_content(1 << 20):
                        spool.write(chunk)
                        self.bytes_read += len(chunk)
                spool.seek(0)
                with zipfile.ZipFile(spool) as archive:
                    for member in archive.infolist():
                        name = PurePosixPath(member.filename).name
                        if member.is_dir() or member.file_size > MAX_MEMBER:
                            continue
                        if name == MASKS_INDEX:
                            self._take_record(archive.read(member))
                        elif name in names:
                            data = archive.read(member)
                            ref = wanted.get(hashlib.md5(data, usedforsecurity=False).hexdigest())
                            if ref is not None:
                                self._settle(ref, True, _info(data, True, ref.uri), ref.uri)
        except (requests.RequestException, zipfile.BadZipFile, OSError, EOFError):
            return

    def _take_record(self, data: bytes) -> None:
        """roi-to-mask's record: its ``origin``, and the ``image`` NIfTI's MD5, shape and
        affine."""
        try:
            record = load_json(data, "roi-to-mask record")
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        origin = record.get("origin")
        if origin in ORIGINS:
            digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
            self.recorded_origins[digest] = origin
            if self.cache:
                self.cache.put_origin(digest, origin)
        try:
            image = record["image"]
            shape = tuple(int(n) for n in image["shape"])
            affine = tuple(tuple(float(x) for x in row) for row in image["affine"])
            digest = str(image["md5"])
        except (ValueError, TypeError, KeyError):
            return
        if len(affine) == 4 and all(len(row) == 4 for row in affine) and len(digest) == 32:
            self.records[digest] = NiftiInfo(shape, affine)

    # ------------------------------------------------------------------ one file, one request

    def _read(self, item: tuple[FileRef, bool]) -> Result:
        ref, values = item
        try:
            return _info(self._get(ref.uri, whole=values), values, ref.uri)
        except XnatMlError as exc:
            return exc

    def _get(self, uri: str, whole: bool) -> bytes:
        headers = {} if whole else {"Range": f"bytes=0-{HEADER_BYTES - 1}"}
        self.requests += 1
        try:
            with self.session.interface.get(
                self.session._format_uri(uri),  # xnatpy's own URL builder for a path
                headers=headers, stream=True, timeout=(10, 300),
            ) as response:  # fmt: skip
                if response.status_code not in (200, 206):
                    raise XnatMlError(
                        f"file {uri}: {explain(response.status_code, response.text)}"
                    )
                if whole:
                    data = response.content
                else:  # 206, or a server that ignores Range: stop after the header
                    data = b""
                    for chunk in response.iter_content(HEADER_BYTES):
                        data += chunk
                        if len(data) >= HEADER_BYTES:
                            break
        except requests.RequestException as exc:
            raise XnatMlError(f"file {uri}: cannot be read ({type(exc).__name__})") from None
        self.bytes_read += len(data)
        return data


def _record_entry(label: FileRef) -> FileEntry | None:
    """The roi-to-mask record in the label file's folder of its resource, if listed."""
    folder = PurePosixPath(label.file.name).parent
    name = str(folder / MASKS_INDEX) if str(folder) != "." else MASKS_INDEX
    return next((f for f in label.resource.files if f.name == name), None)


def _info(data: bytes, values: bool, source: str) -> Result:
    try:
        return nifti_info(data, values=values, source=source)
    except XnatMlError as exc:
        return exc
