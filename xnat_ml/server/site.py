"""Where jobs reach this server: `SITE_URL`, else the one address the server is bound to.

A job's XNAT_HOST (and the URL the Container Service's workers resolve and upload through) is
never taken from a request: a `Host` header is the client's to choose, and a job carries an
alias token. `xnat-ml serve` records the address waitress actually listens on (`bind`); a wildcard
bind (0.0.0.0, ::) is reached at the loopback address of its family. A loopback address serves
only backends whose jobs share this host's network (`Backend.reaches_loopback`); `bind` makes
`xnat-ml serve` refuse, in one line, to serve a backend whose jobs could not reach it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from flask import Flask

from xnat_ml.containers.backends import Backend
from xnat_ml.errors import XnatMlError

BOUND = "XNAT_ML_BOUND_ADDRESSES"  # app.config key: [(host, port)] the server listens on
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def bind(app: Flask, addresses: list[tuple[str, int]], backend: Callable[[], Backend]) -> None:
    """Record the addresses the server listens on; XnatMlError when the jobs of `backend` (the
    default backend, made when needed) cannot reach any and no SITE_URL says where they can."""
    app.config[BOUND] = list(addresses)
    job_url(app, backend)


def job_url(app: Flask, backend: Callable[[], Backend]) -> str:
    """The URL a job on `backend` calls the server at; XnatMlError (one line) when none:
    SITE_URL, else the loopback address when the backend's jobs reach it, else the one other
    address the server listens on."""
    site_url = app.config["SITE_URL"]
    if site_url:
        return site_url.rstrip("/")
    bound = app.config.get(BOUND)
    if not bound:
        raise XnatMlError(
            "jobs: this server's address is unknown (it is not served by `xnat-ml serve`); "
            "set SITE_URL"
        )
    addresses = [(WILDCARDS.get(host, host), port) for host, port in bound]
    loopback = [a for a in addresses if _is_loopback(a[0])]
    others = [a for a in addresses if not _is_loopback(a[0])]
    made = backend()
    if loopback and made.reaches_loopback():
        host, port = loopback[0]
    elif len(others) == 1:
        [(host, port)] = others
    else:
        shown = ", ".join(f"{h}:{p}" for h, p in addresses)
        raise XnatMlError(
            f"backend {made.name}: its jobs cannot reach this server at {shown}; "
            "set SITE_URL (XNAT_ML_SITE_URL) to a URL they reach it at"
        )
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only `localhost` is known to mean this machine
        return host == "localhost"


def own_url(app: Flask) -> str:
    """Where this server's own clients in the process (the ML dashboard) call it: SITE_URL, else
    the first address it listens on (a wildcard at the loopback address)."""
    if app.config["SITE_URL"]:
        return app.config["SITE_URL"].rstrip("/")
    bound = app.config.get(BOUND)
    if not bound:
        raise XnatMlError(
            "this server's address is unknown (it is not served by `xnat-ml serve`); set SITE_URL"
        )
    host, port = bound[0]
    host = WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
