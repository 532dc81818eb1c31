"""Sending DICOM into the archive through XNAT's session import service."""

from __future__ import annotations

from pathlib import Path

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.archives import zip_directory
from xnat_ml.xnat.responses import reported_as


def import_dicom(
    session: XNATSession,
    project: str,
    src_dir: str | Path,
    subject: str | None = None,
    experiment: str | None = None,
    overwrite: str = "append",
):
    """Import the DICOM files under `src_dir` into `project` as one zip; the xnatpy session object.

    The server reads the headers and files them as subject, session and one scan per series.
    `overwrite="append"` lets a re-run add to (not fail on) a session already there.
    """
    src = Path(src_dir)
    with scratch.temporary("import-") as tmp:
        zip_path = Path(tmp) / "dicom.zip"
        if zip_directory(src, zip_path) == 0:
            raise XnatMlError(f"directory {src}: holds no DICOM files to import")
        # An open file, not a path: xnatpy draws a progress bar for paths.
        with open(zip_path, "rb") as body, reported_as(f"XNAT import of {src} into {project}"):
            return session.services.import_(
                data=body,
                content_type="application/zip",
                import_handler="DICOM-zip",
                destination=f"/archive/projects/{project}",
                project=project,
                subject=subject,
                experiment=experiment,
                overwrite=overwrite,
            )
