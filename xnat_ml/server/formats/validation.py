"""Checks on what clients send when creating or editing archive objects.

Labels and IDs end up in URLs and folder names, so they are held to XNAT's legal characters;
field names and values from the query string are bounded; values of fields the XSD types (xs:date,
xs:time, xs:dateTime, xs:integer, xs:decimal, xs:float, xs:boolean) must be of that type;
xsiTypes must be ones this server implements, in the right family. Each failure is a 400 that
names the object and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime

from werkzeug.exceptions import BadRequest

from xnat_ml.server.formats import datatypes
from xnat_ml.server.formats.listing import RESERVED_PARAMS, stored_key
from xnat_ml.server.formats.names import unsafe_character

# Used with fullmatch: `$` alone would let a trailing newline through.
_LABEL_RE = re.compile(r"[A-Za-z0-9_-]+")
SCAN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FIELD_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
# Dates and times as XNAT stores them (no timezone); YYYYMMDD and HH:MM are taken, as XNAT does.
# ASCII: `\d` would also match other scripts' digits.
_DATE_RE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})", re.ASCII)
_TIME_RE = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?", re.ASCII)
_INTEGER_RE = re.compile(r"[+-]?\d+", re.ASCII)
_DECIMAL_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?INF|NaN", re.ASCII)
# Characters XML 1.0 cannot hold: a value with one could not be written in the object's document.
_NOT_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
MAX_LABEL = 64
MAX_RESOURCE_LABEL = 255
MAX_VALUE = 4096


def check_label(kind: str, label: str, pattern: re.Pattern = _LABEL_RE) -> str:
    """A legal XNAT label/ID, or a 400 naming the object and the problem."""
    if not label:
        raise BadRequest(f"{kind} label must not be empty.")
    if len(label) > MAX_LABEL:
        raise BadRequest(f"{kind} label '{label[:20]}…' is longer than {MAX_LABEL} characters.")
    if problem := unsafe_character(label):
        raise BadRequest(f"{kind} label {label!r} contains a {problem}.")
    if not pattern.fullmatch(label):
        raise BadRequest(
            f"{kind} label {label!r} may contain only letters, digits, '_' and '-'"
            + (" (and '.' after the first character)" if pattern is SCAN_ID_RE else "")
            + "."
        )
    return label


def check_resource_label(label: str) -> str:
    """A resource label as XNAT accepts it: non-empty, one path segment, printable."""
    if problem := unsafe_character(label):
        raise BadRequest(f"Resource label {label[:60]!r}: contains a {problem}.")
    one_segment = "/" not in label and "\\" not in label and label not in (".", "..")
    if not label.strip() or len(label) > MAX_RESOURCE_LABEL or not one_segment:
        raise BadRequest(f"Resource label {label[:60]!r}: empty, too long, or has a slash.")
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


def _date(value: str) -> str:
    match = _DATE_RE.fullmatch(value)
    if not match:
        raise ValueError(value)
    date(*map(int, match.groups()))  # ValueError for 2024-13-45 or 2023-02-29
    return "-".join(match.groups())


def _time(value: str) -> str:
    match = _TIME_RE.fullmatch(value)
    if not match:
        raise ValueError(value)
    hours, minutes, seconds, _fraction = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
        raise ValueError(value)
    return value if seconds else f"{value}:00"


def _date_time(value: str) -> str:
    day, sep, clock = value.partition("T")
    if not sep:
        raise ValueError(value)
    return datetime.fromisoformat(f"{_date(day)}T{clock}").isoformat()


def _lexical(pattern: re.Pattern) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(value)
        return value

    return check


def _number(pattern: re.Pattern) -> Callable[[str], str]:
    """A decimal or floating-point number as XNAT gives it back: always with a fraction
    (42 → 42.0, 1e3 → 1000.0), the special values INF and NaN as sent."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(value)
        if value.lstrip("+-") in ("INF", "NaN") or ("." in value and "e" not in value.lower()):
            return value
        return repr(float(value)) if "e" in value.lower() else f"{value}.0"

    return check


def _boolean(value: str) -> str:
    if value not in ("true", "false", "1", "0"):
        raise ValueError(value)
    return value


# XSD type → (check returning the value to store, the form named in the error)
_TYPED: dict[str, tuple[Callable[[str], str], str]] = {
    "xs:date": (_date, "YYYY-MM-DD"),
    "xs:time": (_time, "HH:MM:SS"),
    "xs:dateTime": (_date_time, "YYYY-MM-DDTHH:MM:SS"),
    "xs:integer": (_lexical(_INTEGER_RE), "a whole number"),
    "xs:int": (_lexical(_INTEGER_RE), "a whole number"),
    "xs:long": (_lexical(_INTEGER_RE), "a whole number"),
    "xs:decimal": (_number(_DECIMAL_RE), "a decimal number"),
    "xs:float": (_number(_FLOAT_RE), "a number"),
    "xs:double": (_number(_FLOAT_RE), "a number"),
    "xs:boolean": (_boolean, "true, false, 1 or 0"),
}


def check_value(xs_type: str, field: str, value: str) -> str:
    """A field's value as its XSD type allows it (dates normalised to YYYY-MM-DD), or a 400
    naming the field and the value. An empty value clears the field and is always allowed;
    surrounding blanks are dropped, as the XSD's whitespace rule for these types says."""
    check, form = _TYPED.get(xs_type, (None, ""))
    if check is None or not value.strip():
        return value.strip() if check else value
    try:
        return check(value.strip())
    except ValueError:
        raise BadRequest(f"Field '{field}': {value!r} is not an {xs_type} ({form}).") from None


def typed_fields(xsi_type: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The fields with every value the datatype's XSD types checked (and dates normalised)."""
    return {
        key: check_value(kind, key, value) if (kind := datatypes.field_type(xsi_type, key))
        else value
        for key, value in fields.items()
    }


def query_fields(args: Mapping[str, str]) -> dict[str, str]:
    """Object fields from the query string: `xnat:mrSessionData/date=..` and `date=..` alike.

    The datatype prefix is dropped and the rest stored as listing.stored_key says
    (PI/firstname → PI_firstname); steering parameters (format, xsiType, event_reason, ...)
    are left out.
    """
    fields: dict[str, str] = {}
    for raw_key, value in args.items():
        head, _, rest = raw_key.partition("/")
        key = stored_key(rest if ":" in head and rest else raw_key)
        if key.lower() in RESERVED_PARAMS or key.lower() == "xsitype":
            continue
        if not _FIELD_KEY_RE.fullmatch(key) or len(key) > 128:
            raise BadRequest(f"Field name {raw_key!r} is not a legal XNAT field name.")
        if len(value) > MAX_VALUE:
            raise BadRequest(f"Field '{key}' is longer than {MAX_VALUE} characters.")
        if bad := _NOT_XML_RE.search(value):
            raise BadRequest(f"Field '{key}': contains control character U+{ord(bad[0]):04X}.")
        fields[key] = value
    return fields


def take(fields: dict[str, str], *names: str) -> str | None:
    """Remove and return the first of `names` present in fields (case-insensitive)."""
    wanted = {n.lower() for n in names}
    for key in list(fields):
        if key.lower() in wanted:
            return fields.pop(key)
    return None
