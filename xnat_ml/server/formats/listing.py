"""XNAT's ResultSet listings: column selection, simple filters, paging, JSON or CSV.

Rows arrive as flat dicts (canonical keys plus any datatype-specific fields). `columns=` picks and
orders keys; a column may be named case-insensitively, by XNAT xpath (`xnat:mrSessionData/date`
selects `date`) or by an alias the listing declares (`xnat:subjectData/label` → `subject_label`).
The response echoes the names the client asked for (an xpath column also appears under
the field's own name). Unknown columns come back empty, as XNAT
leaves fields a datatype lacks empty.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
from collections.abc import Iterable, Mapping

from flask import Response, jsonify
from werkzeug.exceptions import BadRequest

# Query parameters that steer the request rather than filter rows.
RESERVED_PARAMS = frozenset(
    {
        "format",
        "columns",
        "limit",
        "offset",
        "xsitype",
        "project",
        "req_format",
        "sortby",
        "sortorder",
        "_",
        "event_reason",
        "event_type",
        "event_action",
        "event_comment",
        "removefiles",
        "allowdatadeletion",
        "recursive",
    }
)


# A custom field's xpath (after the datatype) and the key it is stored under (`field:NAME`).
_CUSTOM_FIELD_RE = re.compile(r"fields/field\[name=([^\]/]+)\]/field", re.IGNORECASE)
CUSTOM_FIELD = "field:"


def stored_key(path: str) -> str:
    """The field key a datatype-relative xpath is stored under: nested steps joined with '_'
    (`investigator/firstname` → `investigator_firstname`), a custom field
    (`fields/field[name=NAME]/field`) as `field:NAME`."""
    if custom := _CUSTOM_FIELD_RE.fullmatch(path):
        return CUSTOM_FIELD + custom.group(1)
    return path.replace("/", "_")


def _lookup_keys(column: str, keys: Mapping[str, str], aliases: Mapping[str, str]) -> list[str]:
    """The row keys a requested column refers to, most likely first (keys: lower-cased key →
    key). A nested field has two spellings in storage, `references/seriesUID` as /xapi/roi
    stores it and `references_seriesUID` as a PUT's query string does, so each row takes the
    first of them it has: one listing often mixes both kinds of rows."""
    lowered = column.lower()
    if lowered in aliases:
        return [aliases[lowered]]
    if lowered in keys:
        return [keys[lowered]]
    if "/" not in lowered:
        return []
    # `icr:roiCollectionData/references/seriesUID`: the field path after the datatype, else
    # its last step
    head, rest = lowered.split("/", 1)
    if ":" in head:
        found = [aliases.get(rest), keys.get(rest), keys.get(stored_key(rest))]
        found = list(dict.fromkeys(k for k in found if k))
        if found:
            return found
    leaf = lowered.rsplit("/", 1)[1]
    return [k for k in (aliases.get(leaf) or keys.get(leaf),) if k]


def select_columns(
    rows: list[dict], columns: Iterable[str], aliases: Mapping[str, str] | None = None
) -> list[dict]:
    """Rows reduced to `columns`, in that order, keyed by the names as requested."""
    aliases = {k.lower(): v for k, v in (aliases or {}).items()}
    keys: dict[str, str] = {}
    for row in rows:
        for key in row:
            keys.setdefault(key.lower(), key)
    wanted = [(name, _lookup_keys(name, keys, aliases)) for name in columns]
    # An xpath column also comes back under its field's own name (pyxnat reads `subject_ID`
    # after asking for `xnat:mrSessionData/subject_id`).
    named = {name for name, _ in wanted}
    wanted += [(found[0], found) for name, found in list(wanted)
               if found and "/" in name and found[0] not in named]  # fmt: skip
    return [{name: _text(next((row[k] for k in found if k in row), "")) for name, found in wanted}
            for row in rows]  # fmt: skip


def filter_rows(rows: list[dict], args: Mapping[str, str]) -> list[dict]:
    """Keep rows whose columns match the non-reserved query parameters (`*` is a wildcard)."""
    if not rows:
        return rows
    keys = {key.lower(): key for row in rows[:1] for key in row}
    filters = [
        (keys[name.lower()], value)
        for name, value in args.items()
        if name.lower() not in RESERVED_PARAMS and name.lower() in keys
    ]
    for key, pattern in filters:
        if "*" in pattern:
            rows = [r for r in rows if fnmatch.fnmatchcase(_text(r.get(key, "")), pattern)]
        else:
            rows = [r for r in rows if _text(r.get(key, "")) == pattern]
    return rows


def page(rows: list[dict], args: Mapping[str, str]) -> list[dict]:
    """Apply `offset` and `limit` (`limit=*` or none: everything)."""
    try:
        offset = int(args.get("offset", 0) or 0)
        limit_arg = args.get("limit", "*") or "*"
        limit = None if limit_arg == "*" else int(limit_arg)
    except ValueError as exc:
        raise BadRequest("limit and offset must be whole numbers (or limit=*).") from exc
    if offset < 0 or (limit is not None and limit < 0):
        raise BadRequest("limit and offset must not be negative.")
    return rows[offset:] if limit is None else rows[offset : offset + limit]


def result_set(
    rows: list[dict],
    args: Mapping[str, str],
    default_columns: Iterable[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Response:
    """The full listing response: filter, page, pick columns, render as JSON (or CSV)."""
    rows = filter_rows(rows, args)
    total = len(rows)
    rows = page(rows, args)
    if args.get("columns"):
        columns = [c.strip() for c in args["columns"].split(",") if c.strip()]
        for always in ("ID", "URI"):  # XNAT always adds them; pyxnat relies on that
            if rows and always in rows[0] and always not in columns:
                columns.append(always)
    else:
        columns = list(default_columns) if default_columns else list(rows[0]) if rows else []
    rows = select_columns(rows, columns, aliases)
    if (args.get("format") or "json").lower() == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else columns)
        writer.writeheader()
        writer.writerows(rows)
        return Response(buffer.getvalue(), mimetype="text/csv")
    return jsonify({"ResultSet": {"Result": rows, "totalRecords": str(total)}})


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
