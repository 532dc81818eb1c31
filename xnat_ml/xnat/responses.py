"""Turn xnatpy and HTTP failures into one-sentence `XnatMlError`s that name the object.

xnatpy raises its own exceptions with the whole response body in the message; a user needs
the object, the status and the server's first line of explanation, nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

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
