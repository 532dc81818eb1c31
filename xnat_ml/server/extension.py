"""The shape of the embedded server's long-lived services: Flask extensions with `init_app`.

Each service has one module-level extension object; `create_app` calls its `init_app(app)`, which
starts the service for that app and keeps it in `app.extensions`, and code reaches it through the
object (`get(app)`, or `get()` inside an app or request context) with its type known. Several apps
in one process (the tests make many) each have their own service behind the same object.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from flask import Flask, current_app

T = TypeVar("T")


class Extension(Generic[T]):
    """One service per app: `start(app)` creates it, `init_app` stores it, `get` finds it."""

    key: ClassVar[str]  # its place in app.extensions, known to this class alone

    def init_app(self, app: Flask) -> None:
        if self.key in app.extensions:
            raise RuntimeError(f"{type(self).__name__}: already started for this app")
        app.extensions[self.key] = self.start(app)

    def start(self, app: Flask) -> T:
        raise NotImplementedError

    def get(self, app: Flask | None = None) -> T:
        """The service of `app` (default: the app of the current context)."""
        return (app or current_app).extensions[self.key]
