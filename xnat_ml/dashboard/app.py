"""Serving the dashboard: mounted at `/ml/` on the embedded server, or alone for any XNAT.

Behind a reverse proxy that serves it under a path (`https://host/xnat/ml/`), the proxy says so
with `X-Forwarded-Prefix: /xnat`; the dashboard's links then carry the prefix. Only the
dashboard's own paths read that header, so XNAT's paths are untouched.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, redirect

from xnat_ml.dashboard import login
from xnat_ml.dashboard.views import bp

MOUNT = "/ml"
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
KEY_FILE = "dashboard.key"  # in the embedded server's data folder: logins outlive a restart


class ForwardedPrefix:
    """WSGI middleware: a request for the dashboard with a well-formed `X-Forwarded-Prefix` is
    served as if mounted under that prefix (links and redirects include it)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        prefix = environ.get("HTTP_X_FORWARDED_PREFIX", "").rstrip("/")
        if prefix and (path == MOUNT or path.startswith(MOUNT + "/")) and _PREFIX.fullmatch(prefix):
            environ = dict(environ, SCRIPT_NAME=prefix + environ.get("SCRIPT_NAME", ""))
        return self.app(environ, start_response)


def _configure(app: Flask, xnat_url: str | Callable[[], str], secret: bytes) -> None:
    app.config.update({
        login.XNAT_URL: xnat_url,
        "SECRET_KEY": secret,
        "SESSION_COOKIE_NAME": "xnat_ml_dashboard",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
    })  # fmt: skip
    app.register_blueprint(bp, url_prefix=MOUNT)
    app.wsgi_app = ForwardedPrefix(app.wsgi_app)


def init_app(app: Flask, xnat_url: Callable[[], str]) -> None:
    """Mount the dashboard on the embedded server; `xnat_url` says where it calls that server
    (server/site.py: never a request's Host)."""
    _configure(app, xnat_url, _kept_secret(Path(app.config["DATA_DIR"]) / KEY_FILE))


def _kept_secret(path: Path) -> bytes:
    """The session-signing key kept in the data folder (made on first use, owner-only)."""
    from xnat_ml.atomic import write_bytes_atomic

    if not path.exists():
        write_bytes_atomic(path, secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def create_app(xnat_url: str) -> Flask:
    """The dashboard alone, for the XNAT at `xnat_url` (`xnat-ml dashboard`); its sessions end
    when it stops (the signing key is made at start)."""
    app = Flask("xnat_ml.dashboard")
    _configure(app, xnat_url, secrets.token_bytes(32))
    app.add_url_rule("/", "root", lambda: redirect(f"{MOUNT}/"))
    return app
