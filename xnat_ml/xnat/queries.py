"""Bulk queries: one REST call for many objects, returned as plain dict rows.

Walking xnatpy's object tree costs one request per object; a dataset of a thousand sessions
must not. XNAT's listings take `columns=` and return a ResultSet table in a single call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import reported_as

EXPERIMENT_COLUMNS = (
    "ID",
    "label",
    "xsiType",
    "project",
    "subject_ID",
    "subject_label",
    "date",
    "URI",
)


def list_rows(session: XNATSession, uri: str, **query: str) -> list[dict[str, Any]]:
    """The `ResultSet.Result` rows of one JSON listing (`GET uri?format=json&...`)."""
    with reported_as(f"XNAT listing {uri}"):
        body = session.get_json(uri, query=dict(query))
    try:
        rows = body["ResultSet"]["Result"]
    except (KeyError, TypeError):
        raise XnatMlError(f"XNAT listing {uri}: the answer is not a ResultSet table") from None
    if not isinstance(rows, list):
        raise XnatMlError(f"XNAT listing {uri}: the ResultSet rows are not a list")
    return rows


def list_experiments(
    session: XNATSession,
    project: str,
    xsi_type: str | None = None,
    columns: Sequence[str] = EXPERIMENT_COLUMNS,
) -> list[dict[str, Any]]:
    """All experiments of `project` (optionally of one xsiType), one row each, in one call."""
    query = {"project": project, "columns": ",".join(columns)}
    if xsi_type:
        query["xsiType"] = xsi_type
    return list_rows(session, "/data/experiments", **query)


def list_resources(session: XNATSession, parent_uri: str) -> list[dict[str, Any]]:
    """The resources of one object (label, format, file_count, ...)."""
    return list_rows(session, f"{parent_uri.rstrip('/')}/resources")


def list_files(session: XNATSession, resource_uri: str) -> list[dict[str, Any]]:
    """The files of one resource (Name, URI, Size, digest, ...)."""
    return list_rows(session, f"{resource_uri.rstrip('/')}/files")


def resource_files(session: XNATSession, resource_uri: str, what: str) -> list[dict[str, Any]]:
    """The file rows of one resource (Name, URI, Size, ...); none when it does not exist."""
    with reported_as(what):
        listed = session.get(f"{resource_uri.rstrip('/')}/files", query={"format": "json"},
                             accepted_status=[200, 404])  # fmt: skip
    return [] if listed.status_code == 404 else listed.json()["ResultSet"]["Result"]


def resource_paths(session: XNATSession, resource_uri: str, what: str) -> list[str]:
    """Every file's path inside one resource, sorted; none when the resource does not exist."""
    paths = []
    for row in resource_files(session, resource_uri, what):
        found = row.get("URI", "")
        path = found.split("/files/", 1)[1] if "/files/" in found else row.get("Name", "")
        paths.append(unquote(path))
    return sorted(p for p in paths if p)
