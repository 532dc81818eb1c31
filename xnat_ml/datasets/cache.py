"""The user's dataset cache: fetched files and inspection results, both keyed by MD5 digest.

One root (``$XDG_CACHE_HOME/xnat-ml``, else ``~/.cache/xnat-ml``; ``--cache DIR`` elsewhere)
holds ``files/<md5[:2]>/<md5>`` (what ``dataset fetch`` downloads) and
``inspections/<md5[:2]>/<md5>.json`` (what a build learnt of a file: shape, affine, and for
label files the values; of a roi-to-mask record, masks.json, the origin it gives). A digest
names the bytes, so an entry never goes stale: a rebuild, or a build after sessions were added,
reads only files it has not seen. Entries are written to a temporary name and renamed; an entry
that cannot be parsed is ignored and written again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from xnat_ml.datasets.records import NiftiInfo

FILES = "files"
INSPECTIONS = "inspections"


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xnat-ml"


class InspectionCache:
    """NiftiInfo by digest, one small JSON file each."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root) / INSPECTIONS

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, digest: str, want_values: bool) -> NiftiInfo | None:
        """The entry, if there is a usable one (with values when they are wanted)."""
        try:
            entry = json.loads(self._path(digest).read_text(encoding="utf-8"))
            info = NiftiInfo(
                tuple(int(n) for n in entry["shape"]),
                tuple(tuple(float(x) for x in row) for row in entry["affine"]),
                None if entry.get("values") is None else frozenset(int(v) for v in entry["values"]),
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None  # missing or corrupt: read the file again, the entry is rewritten
        if len(info.affine) != 4 or (want_values and info.label_values is None):
            return None
        return info

    def put(self, digest: str, info: NiftiInfo, source: str) -> None:
        """Store ``info``; a header-only entry never replaces one that has the values."""
        if info.label_values is None and self.get(digest, want_values=True) is not None:
            return
        entry = {
            "shape": list(info.shape),
            "affine": [list(row) for row in info.affine],
            "values": None if info.label_values is None else sorted(info.label_values),
            "from": source,
        }
        self._write(digest, entry)

    def origin(self, digest: str) -> str | None:
        """The origin read from the roi-to-mask record of this digest, if one was stored."""
        try:
            origin = json.loads(self._path(digest).read_text(encoding="utf-8"))["origin"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return origin if isinstance(origin, str) else None

    def put_origin(self, digest: str, origin: str) -> None:
        """Store the origin a record (masks.json) of this digest gives."""
        self._write(digest, {"origin": origin, "from": "roi-to-mask record"})

    def _write(self, digest: str, entry: dict) -> None:
        path = self._path(digest)
        try:  # a cache that cannot be written costs reads next time, never the build
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, prefix=".part-", suffix=".json", delete=False,
                encoding="utf-8",
            ) as tmp:
                json.dump(entry, tmp)
            os.replace(tmp.name, path)
        except OSError:
            pass
