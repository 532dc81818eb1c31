"""JSON request bodies, bounded in size and depth like every other JSON from outside.

The archive's uploads may be gigabytes (MAX_CONTENT_LENGTH); a JSON body is a few kilobytes, so
it gets its own cap before it is read into memory (413 past it), and the depth rule of
xnat_ml/bounded_json.py (400 naming the body). ``request.get_json`` goes through the same
decoder (:class:`BoundedJSONProvider`).
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from xnat_ml.bounded_json import MAX_JSON_BYTES, load_json

_REQUIRED = object()


def json_body(what: str, empty: Any = _REQUIRED, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The request's body as JSON (``empty`` when there is none, if given); 413 past
    ``max_bytes``, 400 naming ``what`` when it is not JSON or nests too deeply."""
    raw = bounded_body(what, max_bytes)
    if not raw and empty is not _REQUIRED:
        return empty
    return load_json(raw, what, error=BadRequest, max_bytes=max_bytes)


def bounded_body(what: str, max_bytes: int) -> bytes:
    """The whole request body, refused with 413 naming ``what`` past ``max_bytes`` (before
    reading it when its Content-Length says so, else as soon as a chunked one passes it)."""
    limit = limit_body(max_bytes)
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise RequestEntityTooLarge(f"{what}: larger than {limit} bytes") from None


def limit_body(max_bytes: int) -> int:
    """Lower this request's body limit to ``max_bytes`` (never raise MAX_CONTENT_LENGTH) before
    the body or its form is read; returns the limit in force. Past it: 413."""
    site_limit = request.max_content_length
    limit = max_bytes if site_limit is None else min(site_limit, max_bytes)
    request.max_content_length = limit  # this request only (Flask >= 3.1)
    return limit


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, decoding with the depth and size rule (a refusal is a ValueError, which
    ``get_json`` turns into 400)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return load_json(s, "JSON body")
