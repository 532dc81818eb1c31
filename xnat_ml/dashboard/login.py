"""Who is using the dashboard: an XNAT alias token in the Flask session, never the password.

The login form's user and password open one XNAT session, which issues an alias token
(`/data/services/tokens/issue`) and is closed; the token's alias and secret are what the
signed session cookie keeps. Each request then talks to XNAT through an xnatpy session opened
with that token, kept for a few minutes per token in this process (opening one costs several
requests). Logging out invalidates the token on XNAT.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from flask import abort, current_app, request, session
from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.connection import connect
from xnat_ml.xnat.responses import reported_as

XNAT_URL = "DASHBOARD_XNAT_URL"  # app.config: a URL, or a callable giving it (embedded server)
IDLE_S = 300  # an unused xnatpy session is closed after this long


@dataclass
class _Open:
    session: XNATSession
    used: float


_open: dict[tuple[str, str], _Open] = {}
_lock = threading.Lock()


def xnat_url() -> str:
    url = current_app.config[XNAT_URL]
    return (url() if callable(url) else url).rstrip("/")


def log_in(user: str, password: str) -> None:
    """Check the credentials against XNAT and keep an alias token for them (XnatMlError if
    XNAT refuses them)."""
    url = xnat_url()
    with connect(url, user, password) as xnat:
        with reported_as(f"XNAT user {user}: alias token"):
            token = xnat.get_json("/data/services/tokens/issue")
        name = xnat.logged_in_user or user
    session.clear()
    session.update(user=name, alias=token["alias"], secret=token["secret"],
                   csrf=secrets.token_urlsafe(24))  # fmt: skip


def log_out() -> None:
    alias, secret = session.get("alias"), session.get("secret")
    if alias and secret:
        with _lock:
            found = _open.pop((xnat_url(), alias), None)
        try:
            xnat = found.session if found else connect(xnat_url(), alias, secret)
            ok = [200, 204, 401, 403, 404]
            # XNAT's form names the secret; the embedded server's takes the alias alone
            answer = xnat.get(f"/data/services/tokens/invalidate/{alias}/{secret}",
                              accepted_status=ok)  # fmt: skip
            if answer.status_code == 404:
                xnat.get(f"/data/services/tokens/invalidate/{alias}", accepted_status=ok)
            xnat.disconnect()
        except XnatMlError:
            pass  # XNAT gone or the token expired: nothing left to invalidate
    session.clear()


def logged_in() -> bool:
    return bool(session.get("alias"))


def client() -> XNATSession:
    """The user's xnatpy session (opened with their token, reused while it is in use)."""
    url, alias, secret = xnat_url(), session["alias"], session["secret"]
    now = time.monotonic()
    with _lock:
        for key, idle in list(_open.items()):
            if now - idle.used > IDLE_S:
                del _open[key]
                idle.session.disconnect()
        found = _open.get((url, alias))
        if found is not None:
            found.used = now
            return found.session
    try:
        xnat = connect(url, alias, secret)
    except XnatMlError:
        session.clear()  # the token expired or was revoked: log in again
        raise
    xnat._logged_in_user = session["user"]  # the person, not the token's alias
    with _lock:
        _open[(url, alias)] = _Open(xnat, now)
    return xnat


def check_csrf() -> None:
    """A POST must carry the session's token (form field or X-CSRF-Token header)."""
    if request.method != "POST":
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf") or ""
    if not expected or not secrets.compare_digest(sent, expected):
        abort(400, "the form is out of date (missing or wrong CSRF token); reload the page")


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]
