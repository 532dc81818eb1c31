"""Open an xnatpy session from arguments or from the variables the Container Service injects."""

from __future__ import annotations

import os
from typing import Any

import requests
import xnat
from xnat import exceptions as xnat_exceptions
from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import explain

HOST_VARIABLE, USER_VARIABLE, PASSWORD_VARIABLE = "XNAT_HOST", "XNAT_USER", "XNAT_PASS"


def server_login(
    host: str | None, user: str | None, password: str | None
) -> tuple[str, str | None, str | None]:
    """Address, user and password: each argument, else its environment variable.

    The address must be http(s); a user without a password is refused, because xnatpy would
    prompt on a terminal that a container or a test does not have.
    """
    host = (host or os.environ.get(HOST_VARIABLE) or "").rstrip("/")
    user = user or os.environ.get(USER_VARIABLE) or None
    password = password if password is not None else os.environ.get(PASSWORD_VARIABLE)
    if not host:
        raise XnatMlError(f"XNAT server: no address given; pass one or set {HOST_VARIABLE}")
    if not host.startswith(("http://", "https://")):
        raise XnatMlError(f"XNAT server {host}: the address must start with http:// or https://")
    if user and password is None:
        raise XnatMlError(
            f"XNAT user {user}: no password given; pass one or set {PASSWORD_VARIABLE}"
        )
    return host, user, password


def connect(
    host: str | None = None,
    user: str | None = None,
    password: str | None = None,
    **kwargs: Any,
) -> XNATSession:
    """An xnatpy session to `host` (else $XNAT_HOST) as `user` (else $XNAT_USER).

    Arguments win over the environment, so a container launched with XNAT_HOST/USER/PASS needs
    none. Extra keyword arguments go to `xnat.connect` (e.g. `verify=False`). Use it as a
    context manager, or call `.disconnect()`, to close the server-side session.
    """
    host, user, password = server_login(host, user, password)
    kwargs.setdefault("loglevel", "WARNING")
    try:
        return xnat.connect(host, user=user, password=password, **kwargs)
    except xnat_exceptions.XNATAuthError as exc:
        raise XnatMlError(f"XNAT server {host}: login failed for user {user}") from exc
    except xnat_exceptions.XNATResponseError as exc:
        if exc.status_code == 401:
            raise XnatMlError(f"XNAT server {host}: login failed for user {user}") from exc
        answer = explain(exc.status_code, exc.text)
        raise XnatMlError(f"XNAT server {host}: unexpected answer to {exc.url}: {answer}") from exc
    except (requests.ConnectionError, requests.Timeout, xnat_exceptions.XNATConnectionError) as exc:
        raise XnatMlError(f"XNAT server {host}: cannot connect ({type(exc).__name__})") from exc
