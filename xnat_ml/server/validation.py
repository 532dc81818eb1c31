"""Checks on what clients send when creating or editing archive objects.

Labels and IDs end up in URLs and folder names, so they are held to XNAT's legal characters;
field names and values from the query string are bounded; xsiTypes must be ones this server
implements, in the right family. Each failure is a 400 that names the object and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from werkzeug.exceptions import BadRequest

from xnat_ml.server import datatypes
from xnat_ml.server.listing import RESERVED_PARAMS

# Used with fullmatch: `$` alone would let a trailing newline through.
_LABEL_RE = re.compile(r"[A-Za-z0-9_-]+")
SCAN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FIELD_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_DATE_RE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
MAX_LABEL = 64
MAX_VALUE = 4096


def check_label(kind: str, label: str, pattern: re.Pattern = _LABEL_RE) -> str:
    """A legal XNAT label/ID, or a 400 naming the object and the problem."""
    if not label:
        raise BadRequest(f"{kind} label must not be empty.")
    if len(label) > MAX_LABEL:
        raise BadRequest(f"{kind} label '{label[:20]}…' is longer than {MAX_LABEL} characters.")
    if not pattern.fullmatch(label):
        raise BadRequest(
            f"{kind} label {label!r} may contain only letters, digits, '_' and '-'"
            + (" (and '.' after the first character)" if pattern is SCAN_ID_RE else "")
            + "."
        )
    return label


def check_type(xsi_type: str | None, base: str, kind: str) -> str | None:
    if not xsi_type:
        return None
    found = datatypes.canonical(xsi_type)
    if found is None or found not in datatypes.concrete_types(base):
        allowed = ", ".join(datatypes.concrete_types(base))
        raise BadRequest(
            f"{kind} xsiType {xsi_type!r} is not supported here; use one of {allowed}."
        )
    return found


def check_date(value: str) -> str:
    match = _DATE_RE.fullmatch(value.strip())
    if not match:
        raise BadRequest(f"Date {value!r} is not a date in YYYY-MM-DD form.")
    return "-".join(match.groups())


def query_fields(args: Mapping[str, str]) -> dict[str, str]:
    """Object fields from the query string: `xnat:mrSessionData/date=..` and `date=..` alike.

    The datatype prefix is dropped and nested xpaths joined with '_' (PI/firstname →
    PI_firstname); steering parameters (format, xsiType, event_reason, ...) are left out.
    """
    fields: dict[str, str] = {}
    for raw_key, value in args.items():
        parts = raw_key.split("/")
        if ":" in parts[0] and len(parts) > 1:
            parts = parts[1:]
        key = "_".join(parts)
        if key.lower() in RESERVED_PARAMS or key.lower() == "xsitype":
            continue
        if not _FIELD_KEY_RE.fullmatch(key) or len(key) > 128:
            raise BadRequest(f"Field name {raw_key!r} is not a legal XNAT field name.")
        if len(value) > MAX_VALUE:
            raise BadRequest(f"Field '{key}' is longer than {MAX_VALUE} characters.")
        fields[key] = value
    return fields


def take(fields: dict[str, str], *names: str) -> str | None:
    """Remove and return the first of `names` present in fields (case-insensitive)."""
    wanted = {n.lower() for n in names}
    for key in list(fields):
        if key.lower() in wanted:
            return fields.pop(key)
    return None
