"""The SQLite store behind the embedded server: one engine per app, one ORM session per request.

SQLite runs in WAL mode with a busy timeout so that waitress's worker threads can read while one
writes; every request gets its own session (`get_db()`), closed when the request ends. On start
the schema is brought to the code's revision (`schema.upgrade`) before anything reads it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, g, has_request_context, request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from xnat_ml.server.extension import Extension
from xnat_ml.server.store import schema

DB_FILENAME = "xnat-ml.sqlite"
READ_ONLY = "xnat_ml_read_only"  # execution option: begin a plain (deferred) read transaction


def make_engine(data_dir: Path, foreign_keys: bool = True) -> Engine:
    """An engine on DIR/xnat-ml.sqlite shared by all threads (each checks out a connection).

    `foreign_keys=False` is for migrations only (see `schema.upgrade`)."""
    engine = create_engine(
        f"sqlite:///{data_dir / DB_FILENAME}",
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:
        # Let SQLAlchemy emit BEGIN itself: pysqlite's own transaction handling defers it
        # past SELECTs, which lets two writers read the same counter value.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # Writing requests take the lock at BEGIN, so concurrent creations serialise instead of
        # failing with "database is locked" halfway through; WAL readers are never blocked.
        # Work that only reads (a `reader_factory` session) never queues for the write lock.
        reading = conn.get_execution_options().get(READ_ONLY) or (
            has_request_context() and request.method in ("GET", "HEAD", "OPTIONS")
        )
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


class Database(Extension[sessionmaker[Session]]):
    """The app's SQLite store: the schema is brought to the code's revision before anything
    reads it, then every session of the app comes from one factory on one engine."""

    key = "xnat_ml.db"

    def start(self, app: Flask) -> sessionmaker[Session]:
        data_dir = app.config["DATA_DIR"]
        migrating = make_engine(data_dir, foreign_keys=False)
        try:
            schema.upgrade(migrating)
        finally:
            migrating.dispose()
        app.teardown_appcontext(_close_session)
        return sessionmaker(make_engine(data_dir), expire_on_commit=False)


database = Database()


def session_factory(app: Flask | None = None) -> sessionmaker[Session]:
    """The app's session factory, for work outside a request (bootstrap, CLI, event handlers)."""
    return database.get(app)


def reader_factory(app: Flask | None = None) -> sessionmaker[Session]:
    """Sessions for work that only reads, in any thread: they never take (or wait for) the
    write lock, however busy the writers are. Never write in one (under contention the upgrade
    fails at once): write in a `session_factory` session."""
    sessions = session_factory(app)
    return sessionmaker(sessions.kw["bind"].execution_options(**{READ_ONLY: True}),
                        expire_on_commit=False)  # fmt: skip


def get_db() -> Session:
    """The current request's ORM session (created on first use)."""
    if "db" not in g:
        g.db = session_factory()()
    return g.db


def _close_session(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()
