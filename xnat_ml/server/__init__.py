"""The embedded XNAT-compatible server: `create_app(data_dir)` and the `xnat-ml serve` verb."""

from xnat_ml.server.app import create_app

__all__ = ["create_app"]
