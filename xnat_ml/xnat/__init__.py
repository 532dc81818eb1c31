"""Talking to an XNAT server (a real one or `xnat-ml serve`) over its REST API, on xnatpy.

    from xnat_ml.xnat import connect, list_experiments, download_resource, upload_directory
    with connect() as session:            # XNAT_HOST / XNAT_USER / XNAT_PASS
        rows = list_experiments(session, "P1", "xnat:mrSessionData")

The names load lazily (PEP 562): the CLI imports `xnat_ml.xnat.cliargs` to build its parser,
and that must not pull in xnatpy, requests and pandas.
"""

import importlib

_HOMES = {
    "connect": "connection",
    "download_resource": "transfer",
    "import_dicom": "imports",
    "list_experiments": "queries",
    "list_files": "queries",
    "list_resources": "queries",
    "list_rows": "queries",
    "upload_directory": "transfer",
    "upload_roi_collection": "roi",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
