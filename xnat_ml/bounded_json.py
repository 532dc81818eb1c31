"""One JSON reader for data that comes from outside (users, uploads, the archive, HTTP bodies).

Python's ``json`` accepts any size and recurses once per nesting level: a megabyte of ``[`` is a
``RecursionError`` in the decoder, and a few hundred levels that decode still break the code that
walks the result. Every such parser goes through :func:`load_json`, so all of them refuse the
same way, in one line naming the document: too large, not UTF-8, invalid JSON, or nested deeper
than :data:`MAX_JSON_DEPTH` (no real definition, command, bundle or request body comes near).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xnat_ml.errors import XnatMlError

MAX_JSON_BYTES = 16 * 2**20  # callers with a tighter natural size pass their own
MAX_JSON_DEPTH = 64


class JsonDocumentError(XnatMlError, ValueError):
    """JSON that is refused; a ValueError too, so Flask's ``get_json`` answers 400 for it."""


def load_json(
    data: str | bytes,
    what: str,
    *,
    error: type[Exception] = JsonDocumentError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Decode ``data``; any refusal raises ``error("<what>: <problem>")``."""
    if len(data) > max_bytes:
        raise error(f"{what}: larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes | bytearray) else data
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise error(f"{what}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise error(f"{what}: invalid JSON at {where} ({exc.msg})") from None
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply (over {max_depth} levels)") from None
    if _too_deep(value, max_depth):
        raise error(f"{what}: JSON nested too deeply (over {max_depth} levels)")
    return value


def read_json(
    path: str | Path,
    what: str,
    *,
    error: type[Exception] = JsonDocumentError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """:func:`load_json` of a file, checking its size before reading it."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{what}: cannot read {path} ({exc.strerror or exc})") from None
    return load_json(data, what, error=error, max_bytes=max_bytes, max_depth=max_depth)


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than ``max_depth`` (``[]`` is 1), level by level."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(max_depth):
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend(child for child in children if isinstance(child, dict | list))
        if not below:
            return False
        level = below
    return True
