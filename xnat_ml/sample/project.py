"""Build the sample project on an XNAT server through its REST API only.

First the project and its label map (ML_MODELS/region2MaskValueMap.txt: grey matter 1, white
matter 2), so that roi-to-mask, when subscribed, makes label maps from the ROI collections that
follow. Per subject: render a T1w and a T2w series, write them as DICOM, send them through the
session import service, then trace grey and white matter on the T1w series into an RTSTRUCT and
store it as an ROI collection, as an annotator using OHIF would. A re-run skips what is already
there, so an interrupted build completes on the next call and a complete one is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.imaging.rtstruct_write import write_rtstruct
from xnat_ml.imaging.series import load_series
from xnat_ml.layout import LABELMAP_FILE, MODELS_RESOURCE
from xnat_ml.sample import DEFAULT_PROJECT, DEFAULT_SUBJECTS
from xnat_ml.sample.anatomy import load_anatomy
from xnat_ml.sample.dicom_series import T1W, T2W, study_uid, write_series
from xnat_ml.sample.subjects import Subject, Volumes, make_subject, render
from xnat_ml.xnat import import_dicom, list_experiments, list_rows, upload_roi_collection
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import experiment_uri, project_uri

log = logging.getLogger(__name__)

T2W_SLICE_SPACING = 4.0  # mm: the T2w covers the same block as the T1w with thicker slices
ROI_COLORS = {"Grey Matter": (255, 165, 0), "White Matter": (70, 130, 180)}
ROI_COLLECTION_SUFFIX = "_tissues"  # collection label: <session label>_tissues
ROI_COLLECTION_NAME = "brain tissues"  # StructureSetLabel, what OHIF shows
# The project's label map, in XNAT ML's region2MaskValueMap.txt form.
SAMPLE_LABELMAP = "".join(f"{name}={value}\n" for value, name in enumerate(ROI_COLORS, 1))


@dataclass(frozen=True)
class SampleSession:
    """What the build made (or found) for one subject."""

    subject: str
    session_label: str
    session_id: str
    roi_collection: str
    created: bool


def annotator_masks(volumes: Volumes) -> dict[str, np.ndarray]:
    """Grey and white matter as an annotator would outline them: the likelier tissue where it
    is at least even odds, without the one-voxel specks nobody traces."""
    grey, white = volumes.grey_matter, volumes.white_matter
    in_plane = ndimage.generate_binary_structure(2, 1)[:, :, np.newaxis]
    masks = {
        "Grey Matter": (grey >= 0.5) & (grey >= white),
        "White Matter": (white >= 0.5) & (white > grey),
    }
    return {name: ndimage.binary_opening(mask, in_plane) for name, mask in masks.items()}


def build_sample_project(
    session: XNATSession,
    project: str = DEFAULT_PROJECT,
    subjects: int = DEFAULT_SUBJECTS,
    seed: int = 0,
    progress: Callable[[str], None] = log.info,
) -> list[SampleSession]:
    """Make (or complete) the sample project `project` with `subjects` subjects; one entry each."""
    ensure_project(session, project)
    _ensure_labelmap(session, project)
    done = _sessions_with_collections(session, project)
    anatomy = load_anatomy()
    built = []
    for index in range(subjects):
        subject = make_subject(index, seed)
        collection = subject.session_label + ROI_COLLECTION_SUFFIX
        if subject.session_label in done:
            progress(f"{subject.label}: already in project {project}, left as it is")
            built.append(
                SampleSession(subject.label, subject.session_label,
                              done[subject.session_label], collection, created=False)
            )  # fmt: skip
            continue
        with scratch.temporary(f"{subject.label}-") as tmp:
            session_id = _build_subject(session, project, subject, anatomy, Path(tmp), collection)
        progress(f"{subject.label}: session {session_id}, T1w + T2w, ROI collection {collection}")
        built.append(
            SampleSession(subject.label, subject.session_label, session_id, collection, True)
        )
    return built


def _build_subject(
    session: XNATSession, project: str, subject: Subject, anatomy, tmp: Path, collection: str
) -> str:
    t1 = render(subject, anatomy, "T1w")
    t2 = render(subject, anatomy, "T2w", subject.grid.resliced(T2W_SLICE_SPACING))
    write_series(t1, subject, T1W, project, tmp / "dicom" / "t1w")
    write_series(t2, subject, T2W, project, tmp / "dicom" / "t2w")
    imported = import_dicom(
        session, project, tmp / "dicom", subject=subject.label, experiment=subject.session_label
    )
    series = load_series(tmp / "dicom" / "t1w")
    rtstruct = write_rtstruct(
        annotator_masks(t1),
        series,
        tmp / "rtstruct.dcm",
        colors=ROI_COLORS,
        label=ROI_COLLECTION_NAME,
        roi_generation="MANUAL",
        instance_uid=study_uid(project, subject, "rtstruct instance"),
        series_uid=study_uid(project, subject, "rtstruct series"),
    )
    upload_roi_collection(
        session, project, imported.id, collection, rtstruct, "RTSTRUCT", overwrite=True
    )
    return imported.id


def ensure_project(session: XNATSession, project: str) -> None:
    """Create `project` unless it exists."""
    if any(row.get("ID") == project for row in list_rows(session, "/data/projects")):
        return
    with reported_as(f"XNAT project {project}"):
        session.put(project_uri(project))
    session.clearcache()


def _ensure_labelmap(session: XNATSession, project: str) -> None:
    """Store the sample label map unless the project already has one (which is kept)."""
    files = f"{project_uri(project)}/resources/{MODELS_RESOURCE}/files"
    with reported_as(f"project {project}: its label map"):
        listed = session.get(files, query={"format": "json"}, accepted_status=[200, 404])
        if listed.status_code == 200 and any(
            row.get("Name") == LABELMAP_FILE for row in listed.json()["ResultSet"]["Result"]
        ):
            return
        session.put(f"{files}/{LABELMAP_FILE}", data=SAMPLE_LABELMAP.encode(),
                    accepted_status=[200, 201])  # fmt: skip


def _sessions_with_collections(session: XNATSession, project: str) -> dict[str, str]:
    """Session label → ID of the sessions that already hold their sample ROI collection."""
    found = {}
    for row in list_experiments(session, project, "xnat:mrSessionData"):
        assessors = list_rows(session, f"{experiment_uri(row['ID'])}/assessors")
        wanted = row["label"] + ROI_COLLECTION_SUFFIX
        if any(a.get("label") == wanted for a in assessors):
            found[row["label"]] = row["ID"]
    return found
