"""Application factory of the embedded XNAT-compatible server: one blueprint per API family.

Every error reaches the client as one clear line with a 4xx/5xx status, never a stack trace;
a full disk is a 507 with the free bytes; unexpected exceptions are logged with their traceback
here and answered with a 500.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, after_this_request, current_app, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from xnat_ml.dashboard import app as dashboard
from xnat_ml.server import auth, config, site
from xnat_ml.server.container_service import container_service
from xnat_ml.server.event_worker import event_service
from xnat_ml.server.formats.json_body import BoundedJSONProvider
from xnat_ml.server.routing import ObjectPathConverter, RawPathConverter
from xnat_ml.server.store import job_writes, signals
from xnat_ml.server.store.db import database, session_factory
from xnat_ml.server.store.filestore import DiskFull, is_disk_full
from xnat_ml.server.store.journal import archive_files
from xnat_ml.server.store.models import User

log = logging.getLogger(__name__)

# Each module exposes `bp` (a flask.Blueprint); add a family by adding its module here.
BLUEPRINT_MODULES = (
    "xnat_ml.server.api.meta",
    "xnat_ml.server.api.login",
    "xnat_ml.server.api.users",
    "xnat_ml.server.api.archive",
    "xnat_ml.server.api.resources",
    "xnat_ml.server.api.dicom_import",
    "xnat_ml.server.api.roi",
    "xnat_ml.server.api.events",
    "xnat_ml.server.api.commands",
    "xnat_ml.server.api.containers",
    "xnat_ml.server.api.search",
    "xnat_ml.server.api.sharing",
    "xnat_ml.server.api.prearchive",
    "xnat_ml.server.api.workflows",
    "xnat_ml.server.api.launch_ui",
    "xnat_ml.monailabel.blueprint",  # at /monailabel/<project>/; authenticates callers itself
)


def create_app(data_dir: Path, **settings: Any) -> Flask:
    """A ready app serving the archive in `data_dir` (created, with an admin user, when new).

    `settings` are those of config.py by lower-case name; any not given come from the
    environment (XNAT_ML_<NAME>) or their default. Start-up runs in this order: the database
    and its migrations, the file store with journal recovery, the services (event worker,
    container service), the blueprints; work left from before a restart resumes at
    `server_ready`, once the server takes requests."""
    data_dir = Path(data_dir).resolve()
    resolved = config.resolve(settings, os.environ)
    (data_dir / "archive").mkdir(parents=True, exist_ok=True)
    app = Flask("xnat_ml.server")
    app.config.update(resolved, DATA_DIR=data_dir)
    app.url_map.strict_slashes = False
    app.json = BoundedJSONProvider(app)  # request bodies: bounded depth (formats/json_body.py)
    app.json.sort_keys = False  # keep XNAT's column order in listings
    # `<xnat:path>` in any blueprint's rules matches an archive object path (projects/P/...);
    # `<rawpath:path>` a file path inside a resource, taken whole.
    app.url_map.converters["xnat"] = ObjectPathConverter
    app.url_map.converters["rawpath"] = RawPathConverter

    database.init_app(app)
    archive_files.init_app(app)  # finishes or forgets writes a crash interrupted
    job_writes.init_app(app)  # jobs' writes: logged; kept or undone if a crash stopped that
    signals.watch_creations(app, session_factory(app))
    event_service.init_app(app)
    container_service.init_app(app)
    # Authentication first: Flask runs the app's before_request hooks in the order registered,
    # and then the blueprints' own, so no other hook can act for an unauthenticated caller.
    app.before_request(auth.login_unless_public)
    app.before_request(_announce_ready)
    for name in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(name).bp)
    dashboard.init_app(app, lambda: site.own_url(app))  # /ml/: a client of the REST API
    app.before_request(_room_for_deletes)
    app.after_request(_log_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DiskFull, _disk_full)
    app.register_error_handler(Exception, _unexpected_error)
    _ensure_admin(app)
    return app


def _announce_ready() -> None:
    """Work left from before a restart (events, jobs) resumes when the server takes requests:
    `xnat-ml serve` says so once its socket listens; an app served otherwise, here, at its
    first authenticated request."""
    signals.announce_ready(current_app._get_current_object())


def _log_request(response: Response) -> Response:
    """One line per request at debug level (`xnat-ml -v serve`); waitress logs none."""
    log.debug("%s %s -> %s", request.method, request.full_path.rstrip("?"), response.status_code)
    return response


def _http_error(exc: HTTPException) -> Response:
    response = Response(
        f"{exc.code} {exc.name}: {exc.description}\n", exc.code, mimetype="text/plain"
    )
    if exc.code == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="XNAT"'
    return response


def _room_for_deletes() -> None:
    """A delete of archive files must work on a full disk: let the database have the reserve,
    refill it after (from the space the delete frees). Views say so with
    routing.frees_disk_space; a logout, also a DELETE, leaves the reserve alone."""
    view = current_app.view_functions.get(request.endpoint or "")
    if request.method == "DELETE" and getattr(view, "frees_disk_space", False):
        store = archive_files.get()
        store.release_reserve()

        @after_this_request
        def refill(response: Response) -> Response:
            store.fill_reserve()
            return response


def _disk_full(exc: Exception) -> Response:
    store = archive_files.get()
    message = str(exc) if isinstance(exc, DiskFull) else (
        f"no space left on the server's disk while handling {request.path}; "
        f"{store.free()} bytes are free"
    )
    log.warning("%s %s: %s", request.method, request.path, message)
    return Response(f"507 Insufficient Storage: {message}\n", 507, mimetype="text/plain")


def _unexpected_error(exc: Exception) -> Response:
    if is_disk_full(exc):
        return _disk_full(exc)
    log.exception("%s %s failed", request.method, request.path)
    return Response(
        f"500 Internal Server Error: {type(exc).__name__} while handling {request.path}\n",
        500,
        mimetype="text/plain",
    )


def _ensure_admin(app: Flask) -> None:
    """On a fresh archive, create the site admin `admin` with the ADMIN_PASSWORD setting."""
    from xnat_ml.server.auth import hash_password

    with session_factory(app)() as session:
        if session.scalar(select(User.pk).limit(1)) is not None:
            return
        password = app.config["ADMIN_PASSWORD"]
        session.add(
            User(
                username="admin",
                password_hash=hash_password(password),
                is_admin=True,
                first_name="Site",
                last_name="Administrator",
            )
        )
        session.commit()
    where = "the given password" if password != "admin" else "password 'admin'"
    log.warning("Created site administrator 'admin' with %s; change it for shared use.", where)
