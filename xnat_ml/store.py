"""The one declarative base of the embedded server's SQLite store.

Every table (archive, users, catalog, Container Service, Event Service) hangs off this one
metadata, so a single Alembic history (xnat_ml/server/store/migrations) versions them all. It
lives at the top of the package, with nothing but SQLAlchemy below it, so that `containers/` can
declare its tables without importing `server/`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    """Now as naive UTC: the store keeps all timestamps that way."""
    return datetime.now(UTC).replace(tzinfo=None)
