"""``dataset_0.json``: the MONAI (Medical Decathlon) datalist of a dataset version.

The stored copy names files by archive URI (``/data/experiments/...``); a fetched copy names them
by local paths relative to the datalist's folder, which ``monai.data.load_decathlon_datalist``
joins to that folder. Output is canonical (items sorted, keys sorted) so two builds can be
compared byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from xnat_ml.errors import XnatMlError

LISTS = ("training", "validation", "testing")
COUNT_KEYS = {"training": "numTraining", "validation": "numValidation", "testing": "numTesting"}
FILE_KEYS = ("image", "label")
_URI_ROOT = "/data/"


def datalist(
    items: Mapping[str, list[dict[str, Any]]],
    *,
    name: str,
    description: str,
    labels: Mapping[int, str],
) -> dict[str, Any]:
    """Assemble the datalist from items per list (``training``/``validation``/``testing``)."""
    out: dict[str, Any] = {
        "name": name,
        "description": description,
        "labels": {str(v): n for v, n in sorted({0: "background", **labels}.items())},
    }
    for key in LISTS:
        rows = sorted(items.get(key, []), key=lambda r: (r["subject"], r["session"]))
        out[key] = rows
        out[COUNT_KEYS[key]] = len(rows)
    return out


def dumps(doc: Any) -> str:
    """Canonical JSON text: sorted keys, two-space indent, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def local_path(uri: str, prefix: str = "") -> str:
    """Where a fetched copy keeps an archive file, relative to the datalist's folder:
    ``/data/experiments/E1/scans/3/resources/NIFTI/files/t1.nii.gz`` becomes
    ``PREFIX/experiments/E1/scans/3/resources/NIFTI/files/t1.nii.gz`` (segments unquoted)."""
    if not uri.startswith(_URI_ROOT):
        raise XnatMlError(f"datalist file {uri!r}: not an archive URI under {_URI_ROOT}")
    parts = [unquote(p) for p in uri[len(_URI_ROOT) :].split("/")]
    if any(p in ("", ".", "..") or "/" in p or "\\" in p or "\0" in p for p in parts):
        raise XnatMlError(f"datalist file {uri!r}: has an empty, '.', '..' or slashed segment")
    return "/".join(([prefix.rstrip("/")] if prefix else []) + parts)


def localize(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A copy of a stored datalist with every image and label URI rewritten by ``local_path``."""

    def rewrite(value: Any) -> Any:
        if isinstance(value, list):
            return [local_path(v, prefix) for v in value]
        return local_path(value, prefix)

    out = dict(doc)
    for key in LISTS:
        out[key] = [
            {k: rewrite(v) if k in FILE_KEYS else v for k, v in item.items()}
            for item in doc.get(key, [])
        ]
    return out


def uris(doc: Mapping[str, Any]) -> list[str]:
    """Every archive file a datalist names, sorted and once each (what a fetch must get)."""
    found: set[str] = set()
    for key in LISTS:
        for item in doc.get(key, []):
            for file_key in FILE_KEYS:
                value = item.get(file_key)
                found.update(value if isinstance(value, list) else [value] if value else [])
    return sorted(found)


def previous_assignment(doc: Mapping[str, Any]) -> dict[str, str]:
    """``{subject: split}`` of an earlier datalist, in the names ``assign_splits`` uses
    (``training``, ``validation``, ``testing``, or ``fold{i}`` for fold items)."""
    out: dict[str, str] = {}
    for key in LISTS:
        for item in doc.get(key, []):
            if isinstance(item, dict) and isinstance(item.get("subject"), str):
                fold = item.get("fold")
                out.setdefault(item["subject"], f"fold{fold}" if isinstance(fold, int) else key)
    return out
