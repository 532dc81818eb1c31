"""Talking to an XNAT server (a real one or `xnat-ml serve`) over its REST API, on xnatpy.

    from xnat_ml.xnat import connect, list_experiments, download_resource, upload_directory
    with connect() as session:            # XNAT_HOST / XNAT_USER / XNAT_PASS
        rows = list_experiments(session, "P1", "xnat:mrSessionData")
"""

from xnat_ml.xnat.connection import connect
from xnat_ml.xnat.imports import import_dicom
from xnat_ml.xnat.queries import list_experiments, list_files, list_resources, list_rows
from xnat_ml.xnat.roi import upload_roi_collection
from xnat_ml.xnat.transfer import download_resource, upload_directory

__all__ = [
    "connect",
    "download_resource",
    "import_dicom",
    "list_experiments",
    "list_files",
    "list_resources",
    "list_rows",
    "upload_directory",
    "upload_roi_collection",
]
