"""Fetch a dataset version for training: its files into a content-addressed cache, then a local
``dataset_0.json`` whose paths are relative to the folder it is written in.

The cache holds each file once under its MD5 digest (what XNAT's file listings give), so a
second fetch, or another dataset sharing files, downloads nothing. A download goes to a
temporary name and is renamed into the cache only when its size and digest check out: an
interrupted or failed fetch leaves no broken entry, and a retry completes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml.atomic import write_bytes_atomic
from xnat_ml.datasets.cache import FILES, default_root
from xnat_ml.datasets.datalist import dumps, local_path, localize, uris
from xnat_ml.datasets.resolver import file_catalogue
from xnat_ml.datasets.versions import DATALIST_FILE, find_version, read_json
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import explain

WORKERS = 8
LOCAL_PREFIX = "data"  # DIR/data/experiments/...: the fetched files, next to dataset_0.json


@dataclass(frozen=True)
class Fetched:
    datalist: Path
    files: int
    downloaded: int  # files not in the cache before
    bytes_downloaded: int


def fetch_dataset(
    session: XNATSession,
    project: str,
    name: str,
    dest: Path,
    *,
    number: int | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> Fetched:
    """Fetch version ``number`` (default: the latest) of dataset ``name`` into ``dest``; files
    are kept under ``cache`` (default: the user's cache root) in ``files/``."""
    version = find_version(session, project, name, number)
    doc = read_json(session, project, version, DATALIST_FILE)
    wanted = uris(doc)
    catalogue = file_catalogue(session, project)
    missing = [uri for uri in wanted if uri not in catalogue]
    if missing:
        raise XnatMlError(
            f"dataset {name} v{version.number}: {len(missing)} file(s) are no longer in the "
            f"archive, e.g. {missing[0]}; rebuild the dataset"
        )
    cache = (cache or default_root()) / FILES
    cache.mkdir(parents=True, exist_ok=True)
    by_digest = {catalogue[uri][1]: uri for uri in wanted}  # one download per content
    todo = [uri for d, uri in sorted(by_digest.items()) if not _cached(cache, d).is_file()]
    bar = _Progress(len(todo), sum(catalogue[u][0] or 0 for u in todo), progress)
    with ThreadPoolExecutor(WORKERS) as pool:
        for _ in pool.map(lambda u: _download(session, u, *catalogue[u], cache, bar), todo):
            pass
    bar.done()
    for uri in wanted:
        _place(_cached(cache, catalogue[uri][1]), dest / local_path(uri, LOCAL_PREFIX))
    dest.mkdir(parents=True, exist_ok=True)
    datalist = dest / "dataset_0.json"
    write_bytes_atomic(datalist, dumps(localize(doc, LOCAL_PREFIX)).encode())
    return Fetched(datalist, len(wanted), len(todo), bar.bytes)


def _cached(cache: Path, digest: str) -> Path:
    return cache / digest[:2] / digest


def _download(
    session: XNATSession, uri: str, size: int | None, digest: str, cache: Path, bar: _Progress
) -> None:
    target = _cached(cache, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5(usedforsecurity=False)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".part-", delete=False) as tmp:
        try:
            with session.interface.get(session._format_uri(uri), stream=True,
                                       timeout=(10, 300)) as response:  # fmt: skip
                if response.status_code != 200:
                    raise XnatMlError(
                        f"file {uri}: {explain(response.status_code, response.text)}; "
                        "it may have been removed since the dataset was built"
                    )
                for chunk in response.iter_content(1 << 20):
                    tmp.write(chunk)
                    md5.update(chunk)
                    bar.add(len(chunk))
            tmp.close()
            got = os.path.getsize(tmp.name)
            if (size is not None and got != size) or md5.hexdigest() != digest:
                raise XnatMlError(
                    f"file {uri}: {got} bytes with MD5 {md5.hexdigest()}, expected "
                    f"{size} bytes with MD5 {digest}; the file changed: rebuild the dataset"
                )
            os.replace(tmp.name, target)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise


def _place(source: Path, target: Path) -> None:
    """A hard link to the cached file (a copy across file systems), replacing what is there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class _Progress:
    """A one-line progress bar on stderr (a terminal only); thread-safe."""

    def __init__(self, files: int, total: int, show: bool) -> None:
        self.files, self.total, self.bytes = files, total, 0
        self.show = show and sys.stderr.isatty()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            if self.show:
                share = self.bytes / self.total if self.total else 1.0
                filled = int(30 * min(share, 1.0))
                sys.stderr.write(
                    f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.bytes / 1e6:.1f}"
                    f"/{self.total / 1e6:.1f} MB, {self.files} files"
                )

    def done(self) -> None:
        if self.show and self.files:
            sys.stderr.write("\n")
