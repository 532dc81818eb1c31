"""Who calls, and their xnatpy session: MONAI Label's clients send ``Bearer <token>`` (the XNAT
alias token ``/auth/token`` handed out, ``alias:secret``), or basic auth; without either, the
user ``xnat-ml monailabel`` was started with, if any. Every XNAT call is made with those
credentials, so XNAT's own checks apply; the caller's project role is read once per session.

Sessions are kept a short while per credentials (never logged; keyed by their digest), so a
client's next call does not log in again.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from dataclasses import dataclass, field

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.connection import connect
from xnat_ml.xnat.roles import ROLES, project_role

KEEP_S = 300  # how long a caller's session and role are reused
_MAX_KEPT = 64


class Unauthorized(XnatMlError):
    """No or wrong credentials (answered 401)."""


class Forbidden(XnatMlError):
    """The caller's role does not allow it (answered 403; 404 for a user outside the project)."""


@dataclass
class Caller:
    session: XNATSession
    user: str
    role: str | None  # in the project; None: outside it
    since: float = field(default_factory=time.monotonic)

    def require(self, needed: str, action: str, project: str) -> None:
        if self.role is None:
            raise Forbidden(f"project {project}: not found")
        if ROLES.index(self.role) < ROLES.index(needed):
            raise Forbidden(f"project {project}: {action} needs the {needed} role "
                            f"(user {self.user} is {self.role})")  # fmt: skip


_kept: dict[bytes, Caller] = {}
_lock = threading.Lock()


def credentials(header: str | None, default: tuple[str, str] | None) -> tuple[str, str]:
    """(user or alias, password or secret) from an Authorization header, else ``default``."""
    if header:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            alias, sep, secret = value.partition(":")
            if sep and alias and secret:
                return alias, secret
        elif scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                sep = ""
            if sep and user:
                return user, password
        raise Unauthorized("credentials: the Authorization header is not a token or basic auth")
    if default is None:
        raise Unauthorized("credentials: none given; log in (POST auth/token) first")
    return default


def caller(xnat_url: str, project: str, login: tuple[str, str]) -> Caller:
    """The caller's session and role, reused for KEEP_S seconds."""
    key = hashlib.sha256("\0".join((xnat_url, project, *login)).encode()).digest()
    with _lock:
        found = _kept.get(key)
        if found is not None and time.monotonic() - found.since < KEEP_S:
            return found
    try:
        session = connect(xnat_url, login[0], login[1])
    except XnatMlError as exc:
        if "login failed" in str(exc):
            raise Unauthorized("credentials: XNAT refused them") from None
        raise
    made = Caller(session, session.logged_in_user or login[0], project_role(session, project))
    with _lock:
        old = _kept.pop(key, None)
        if len(_kept) >= _MAX_KEPT:
            _kept.pop(next(iter(_kept)))
        _kept[key] = made
    if old is not None:
        _close(old.session)
    return made


def _close(session: XNATSession) -> None:
    try:
        session.disconnect()
    except Exception:  # the server may have ended it already
        pass
