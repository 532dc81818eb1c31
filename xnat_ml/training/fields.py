"""Strict reading of JSON objects: every error is one line naming the file and the field."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from xnat_ml.errors import XnatMlError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "an object", list: "a list"}  # fmt: skip


class Fields:
    """One JSON object being read from ``source``, at ``path`` inside it (``model.name``)."""

    def __init__(self, value: Any, source: str, path: str = "") -> None:
        if not isinstance(value, dict):
            raise XnatMlError(f"{source}: {path or 'the file'} must be a JSON object")
        self.value = value
        self.source = source
        self.path = path

    def field(self, key: str) -> str:
        """``source: path.key``, the name every error about ``key`` starts with."""
        return f"{self.source}: {self.path}.{key}" if self.path else f"{self.source}: {key}"

    def only(self, allowed: Iterable[str]) -> None:
        """Reject keys this object does not define (a typo must not be silently ignored)."""
        allowed = list(allowed)
        for key in self.value:
            if key not in allowed:
                raise XnatMlError(
                    f"{self.field(key)}: unknown field (expected one of {', '.join(allowed)})"
                )

    def get(self, key: str, kind: type, *, required: bool = False, default: Any = None) -> Any:
        """The value of ``key`` checked against ``kind`` (an int passes as a float, a bool
        never as a number)."""
        if key not in self.value or self.value[key] is None:
            if required:
                raise XnatMlError(f"{self.field(key)}: missing")
            return default
        value = self.value[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok and kind is float and not math.isfinite(value):
            raise XnatMlError(f"{self.field(key)}: expected a finite number, got {value!r}")
        if not ok:
            raise XnatMlError(
                f"{self.field(key)}: expected {_TYPE_NAMES.get(kind, kind.__name__)}, "
                f"got {type(value).__name__} {value!r:.60}"
            )
        return value

    def sub(self, key: str, *, required: bool = False) -> Fields | None:
        value = self.get(key, dict, required=required)
        path = f"{self.path}.{key}" if self.path else key
        return None if value is None else Fields(value, self.source, path)
