"""Turn xnatpy and HTTP failures into one-sentence `XnatMlError`s that name the object.

xnatpy raises its own exceptions with the whole response body in the message; a user needs
the object, the status and the server's first line of explanation, nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import requests
from xnat import exceptions as xnat_exceptions

from xnat_ml.errors import XnatMlError

_TAG = re.compile(r"<[^>]+>")
_UPLOAD_FAILURE = re.compile(r"Status code (\d+), response text (.*)", re.DOTALL)


def explain(status: int, text: str) -> str:
    """`HTTP 403 (first line of the server's explanation)`, short enough for one line."""
    lines = (line.strip() for line in _TAG.sub(" ", text or "").splitlines())
    first = next((line for line in lines if line), "")
    return f"HTTP {status}" + (f" ({first[:200]})" if first else "")


@contextmanager
def reported_as(what: str) -> Iterator[None]:
    """Run the block; a failure talking to XNAT becomes `XnatMlError("<what>: <problem>")`."""
    try:
        yield
    except xnat_exceptions.XNATResponseError as exc:
        answer = explain(exc.status_code, exc.text)
        raise XnatMlError(f"{what}: the server answered {answer}") from exc
    except xnat_exceptions.XNATAuthError as exc:
        raise XnatMlError(f"{what}: login failed ({exc})") from exc
    except (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,  # connection broken mid-answer
        xnat_exceptions.XNATConnectionError,
    ) as exc:
        raise XnatMlError(f"{what}: cannot reach the XNAT server ({type(exc).__name__})") from exc
    except requests.Timeout as exc:
        raise XnatMlError(f"{what}: the XNAT server did not answer in time") from exc
    except xnat_exceptions.XNATError as exc:  # e.g. XNATUploadError, which keeps only text
        upload = _UPLOAD_FAILURE.search(str(exc))
        problem = explain(int(upload[1]), upload[2]) if upload else str(exc).splitlines()[0][:200]
        raise XnatMlError(f"{what}: {problem}") from exc


def connection_failure(exc: BaseException, url: str | None) -> str | None:
    """The one line to print for `exc` if it is the server going away (refused, dropped,
    timed out) or an HTTP error answer nobody turned into a sentence; None for anything else.
    `url` is the server the command was given, used when the exception names none."""
    import urllib3

    request = getattr(exc, "request", None)
    where = _site(getattr(request, "url", None) or url or "")
    if isinstance(exc, xnat_exceptions.XNATResponseError):
        return f"XNAT at {where} answered {explain(exc.status_code, exc.text)}"
    lost = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        xnat_exceptions.XNATConnectionError,
        urllib3.exceptions.HTTPError,
        ConnectionError,  # the builtin: reset, aborted, refused
    )
    if not isinstance(exc, lost):
        return None
    text = str(exc).lower()
    if "refused" in text:
        reason = "connection refused"
    elif isinstance(exc, requests.Timeout) or "timed out" in text:
        reason = "no answer in time"
    else:
        reason = f"connection lost: {type(exc).__name__}"
    return f"cannot reach XNAT at {where} ({reason})"


def _site(url: str) -> str:
    """scheme://host[:port] of a URL (no path, query or credentials), or '(no URL given)'."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return url or "(no URL given)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
