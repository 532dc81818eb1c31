"""The embedded XNAT-compatible server: `create_app(data_dir)` and the `xnat-ml serve` verb.

`create_app` loads lazily (PEP 562): `xnat-ml` imports this package to register `serve`, and
no other verb should pay for Flask and SQLAlchemy.
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from xnat_ml.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
