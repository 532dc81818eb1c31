"""URL routing shared by the blueprints: the archive-path converters and the /data twin routes.

`<xnat:path>` matches an archive object path (the grammar of xnat/uris.py, which
store/objects.py then resolves); `<rawpath:path>` takes a file path whole, empty segments
included, so that a hostile one is refused with a 400 rather than redirected. `archive_route`
registers a view under both /data and /data/archive, as XNAT serves both.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint
from werkzeug.routing import BaseConverter, PathConverter

from xnat_ml.xnat.uris import OBJECT_PATTERN


class ObjectPathConverter(BaseConverter):
    """URL converter `<xnat:name>` for an archive object path such as projects/P/subjects/S
    (the grammar of xnat/uris.py, which store/objects.py then resolves)."""

    regex = OBJECT_PATTERN
    part_isolating = False


def archive_route(blueprint: Blueprint, rule: str, **options) -> Callable:
    """Register a view under both /data{rule} and /data/archive{rule}, as XNAT serves both."""

    def decorator(view: Callable) -> Callable:
        blueprint.add_url_rule(f"/data{rule}", view_func=view, **options)
        blueprint.add_url_rule(
            f"/data/archive{rule}", endpoint=f"archive_{view.__name__}", view_func=view, **options
        )
        return view

    return decorator


def frees_disk_space(view: Callable) -> Callable:
    """Mark a view that deletes archive files: only these may use the disk reserve on a full
    disk (app._room_for_deletes). Other DELETEs (a logout, a revoked token, a membership) free
    no file, so the reserve they took could not be refilled after them."""
    view.frees_disk_space = True  # type: ignore[attr-defined]
    return view


class RawPathConverter(PathConverter):
    """`<rawpath:...>`: a file path taken whole, empty segments included."""

    regex = ".+"
