"""`xnat-ml infer`, the XNAT layer: a model version of a project on one of its sessions, the
result stored as an AI DICOM SEG ROI collection with its LABELMAP resource.

The session's input images are found by the model's lineage (its card's dataset version's
definition.json, or a definition given by hand): each channel's scan-level criteria pick one
scan, whose DICOM is converted on the way (the result must be on that series' grid for the
SEG). The model version is pulled digest-checked into a cache before its bundle is parsed.
Storing comes last, SEG then LABELMAP; a failure of the second removes the first (an Owner's
right; a Member, who deletes nothing, is told to rerun, which replaces it whole). Re-running a
model version on a session replaces its own earlier collection, never a human one of the same
label.

Each run times its phases (``Inferred.timings``, also logged at DEBUG): what the inference
benchmark (benchmarks/bench_infer.py) sets apart from the model's own time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xnat import exceptions as xnat_exceptions
from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.datasets.cache import default_root
from xnat_ml.datasets.definition import Definition, parse_definition
from xnat_ml.datasets.matching import scan_matches
from xnat_ml.datasets.records import Scan
from xnat_ml.datasets.versions import find_version, read_file
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.ai_collections import ai_collection_label, algorithm_name, collection_origin
from xnat_ml.imaging.labelmap import load_labelmap, read_labels
from xnat_ml.imaging.mask_folder import write_mask_folder
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import Series, load_series, save_nifti
from xnat_ml.layout import DICOM_RESOURCE, LABELMAP_FILE, LABELMAP_RESOURCE, ROI_COLLECTION_XSI
from xnat_ml.training.digests import check_files
from xnat_ml.training.model import ModelCard
from xnat_ml.training.project_models import (
    find_model,
    parse_version,
    pull_model,
    read_model_card,
    split_ref,
    version_digests,
)
from xnat_ml.xnat import download_resource, list_experiments, list_rows, upload_directory
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.roi import upload_roi_collection
from xnat_ml.xnat.roles import require_role
from xnat_ml.xnat.uris import assessor_uri, experiment_uri, resource_uri, scan_uri
from xnat_ml.xnat.workflow import WorkflowProgress

log = logging.getLogger(__name__)

SEG_FILE = "seg.dcm"
LABELMAP_FOLDER = "labelmap"  # in --to DIR: the LABELMAP resource's files


@dataclass(frozen=True)
class Inferred:
    """What one run made: the collection's label, the scans used, where it went."""

    model: str
    version: int
    session_id: str
    session_label: str
    scans: dict[str, str]  # input channel -> scan id
    label: str
    collection_id: str | None  # the assessor, when stored
    replaced: bool
    timings: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds


#: how far a run is when it enters each phase (the model's forward pass is the long one)
PHASE_PERCENT = {"checks": 0, "pull": 10, "download": 20, "conversion": 40, "model": 50,
                 "result": 80, "store": 90}  # fmt: skip


class _Phases:
    """Wall seconds per phase of one run, in the order first entered: checks, pull, download,
    conversion, model (``infer`` and its NIfTI written), result (SEG and label map folder),
    store (upload, or the copy into --to)."""

    def __init__(self, progress: WorkflowProgress | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.progress is not None:  # a job's workflow step (xnat/workflow.py)
            self.progress.report(f"infer: {name}", PHASE_PERCENT.get(name))
        started = time.perf_counter()
        try:
            yield
        except NothingToDo as skipped:  # the job completes: its workflow says why with nothing
            if self.progress is not None:
                self.progress.report(f"infer: {skipped}", 100, final=True)
            raise
        finally:
            spent = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + spent
            log.debug("infer phase %s: %.3f s", name, spent)


class MissingChannel(XnatMlError):
    """The session has no scan for one of the model's input channels."""


class NothingToDo(Exception):
    """A triggered run that should not go ahead (yet): why, in one line; nothing was stored."""


def infer_session(
    session: XNATSession,
    project: str,
    session_ref: str,
    model_ref: str,
    *,
    definition: Path | None = None,
    device: str = "cpu",
    store: bool = True,
    to: Path | None = None,
    cache: Path | None = None,
    trigger_scan: str | None = None,
) -> Inferred:
    """Run model ``NAME[:N]`` on session ``session_ref`` (accession id or label) of ``project``.

    ``store``: PUT the SEG collection and its LABELMAP (Member or Owner); otherwise ``to`` gets
    ``seg.dcm`` and ``labelmap/`` and nothing is stored (a Collaborator may do that).
    ``trigger_scan``: the scan whose new DICOM set this run off (the Event Service); unless it
    is one of the model's input scans and every channel has its scan, NothingToDo, so that of
    a session's DICOM uploads only the last input's runs the model.
    """
    progress = WorkflowProgress(session)
    phases = _Phases(progress)
    with phases("checks"):
        if store:
            require_role(session, project, "Member", "infer (storing its SEG collection)")
        else:
            if to is None:
                raise XnatMlError("infer --no-store: needs --to DIR for the result")
            require_role(session, project, "Collaborator", "infer")
        name, asked = split_ref("model", model_ref)
        number = find_model(session, project, name, asked)
        card = read_model_card(session, project, name, number)
        criteria = _definition(session, project, card, number, definition)
        session_id, session_label = _find_session(session, project, session_ref)
        try:
            scans = _channel_scans(session, session_id, card, criteria)
        except MissingChannel as exc:
            if trigger_scan is None:
                raise
            raise NothingToDo(f"{exc}: not yet; its DICOM's arrival runs the model") from None
        if trigger_scan is not None and trigger_scan not in scans.values():
            raise NothingToDo(f"scan {trigger_scan} of session {session_label}: not an input image "
                              f"of model {name} v{number}; nothing to do")  # fmt: skip
        if trigger_scan is not None:
            _require_dicom(session, session_id, scans)
        label = ai_collection_label(name, number, session_label)
    with scratch.temporary("infer-") as tmp:
        work = Path(tmp)
        with phases("checks"):
            replaced = store and _own_collection(session, session_id, label, work)
        if replaced and trigger_scan is not None:
            raise NothingToDo(f"session {session_label}: has collection {label} already (another "
                              "scan's DICOM set it off); nothing to do")  # fmt: skip
        with phases("pull"):
            model_dir = cached_model(session, project, name, number, cache or default_root())
        images, series = _images(session, session_id, scans, work, phases)
        from xnat_ml.inference.predict import infer

        with phases("model"):
            result = infer(model_dir, images, device)
            result.to_filename(work / "prediction.nii.gz")
        with phases("result"):
            labels = read_labels(work / "prediction.nii.gz", series)
            _write_result(labels, model_dir, series, name, number, label, work / "out")
        with phases("store"):
            if store:
                collection = _store(session, project, session_id, label, work / "out", replaced,
                                    triggered=trigger_scan is not None)  # fmt: skip
            else:
                _deliver(work / "out", Path(to))
                collection = None
    done = f"stored SEG collection {label}" if collection else f"wrote {label} to {to}"
    progress.report(f"infer: {done}", 100, final=True)
    return Inferred(name, number, session_id, session_label, scans, label, collection, replaced,
                    phases.seconds)  # fmt: skip


def _definition(
    session: XNATSession, project: str, card: ModelCard, number: int, path: Path | None
) -> Definition:
    """The definition given by hand, else the one of the dataset version the model came from."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise XnatMlError(f"definition {path}: cannot be read ({exc.strerror})") from None
        return parse_definition(text, str(path))
    if card.dataset is None:
        raise XnatMlError(
            f"model {card.name} v{number}: its card names no dataset to take the scan criteria "
            "from; give them with --definition FILE (a dataset definition)"
        )
    dataset = card.dataset.name
    asked = parse_version(f"model {card.name} v{number}: dataset {dataset}", card.dataset.version)
    version = find_version(session, project, dataset, asked)
    text = read_file(session, project, version, "definition.json")
    return parse_definition(text, f"{dataset} v{version.number}")


def _find_session(session: XNATSession, project: str, ref: str) -> tuple[str, str]:
    """(accession id, label) of the project's image session named by id or label."""
    rows = list_experiments(session, project, columns=("ID", "label", "xsiType"))
    for row in rows:
        if ref in (row.get("ID"), row.get("label")) and "SessionData" in row.get("xsiType", ""):
            return str(row["ID"]), str(row.get("label") or row["ID"])
    raise XnatMlError(f"session {ref}: no image session of project {project} has that id or label")


def _channel_scans(
    session: XNATSession, session_id: str, card: ModelCard, definition: Definition
) -> dict[str, str]:
    """Input channel (the card's order) -> the one scan of the session its criteria pick."""
    if len(definition.images) != len(card.input_channels):
        raise XnatMlError(
            f"model {card.name}: needs {len(card.input_channels)} input channels "
            f"({', '.join(card.input_channels)}) but the definition has "
            f"{len(definition.images)} image tags ({', '.join(t.tag for t in definition.images)})"
        )
    rows = list_rows(session, f"{experiment_uri(session_id)}/scans")
    scans = [Scan(str(r.get("ID", "")), str(r.get("type") or ""),
                  str(r.get("series_description") or "")) for r in rows]  # fmt: skip
    picked = {}
    for channel, tag in zip(card.input_channels, definition.images, strict=True):
        found = [s.id for s in scans if scan_matches(tag, s)]
        wanted = ", ".join(p.text for p in tag.series) or "any"
        if not found:
            raise MissingChannel(f"session {session_id}: no scan for input channel {channel} "
                              f"(SeriesDescription {wanted})")  # fmt: skip
        if len(found) > 1:
            raise XnatMlError(f"session {session_id}: scans {', '.join(found)} all match input "
                              f"channel {channel} (SeriesDescription {wanted}); "
                              "narrow the definition's criteria")  # fmt: skip
        picked[channel] = found[0]
    return picked


def _require_dicom(session: XNATSession, session_id: str, scans: dict[str, str]) -> None:
    """NothingToDo while an input scan has no DICOM yet: its upload's event runs the model."""
    for channel, scan_id in scans.items():
        rows = list_rows(session, f"{scan_uri(session_id, scan_id)}/resources")
        if DICOM_RESOURCE not in {r.get("label") for r in rows}:
            raise NothingToDo(
                f"scan {scan_id} of session {session_id} (input channel {channel}): "
                f"no {DICOM_RESOURCE} yet; its arrival runs the model"
            )


def cached_model(session: XNATSession, project: str, name: str, number: int, cache: Path) -> Path:
    """The model version's folder in the cache, named by the version's digests (so another
    server's or a re-made version's files never stand in for these) and checked against them at
    every use; pulled (each file digest-checked) when absent or no longer as recorded."""
    digests = version_digests(session, project, name, number)
    key = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache / "models" / key
    if folder.is_dir():
        try:
            check_files(folder, digests, f"cached model {name} v{number} ({folder})")
            return folder
        except XnatMlError as exc:
            log.warning("%s; pulling it again", exc)
            shutil.rmtree(folder)
    return pull_model(session, project, name, number, folder)


def _images(
    session: XNATSession, session_id: str, scans: dict[str, str], work: Path, phases: _Phases
) -> tuple[list[Path], Series]:
    """Each channel's scan converted from its DICOM (in channel order), and the first one's
    series: the grid the result and the SEG are on."""
    images, first = [], None
    for channel, scan_id in scans.items():
        folder = work / "scans" / scan_id
        uri = resource_uri(scan_uri(session_id, scan_id), DICOM_RESOURCE)
        with phases("download"), reported_as(f"scan {scan_id} of session {session_id} (input "
                                             f"channel {channel}): its {DICOM_RESOURCE} "
                                             "resource"):  # fmt: skip
            download_resource(session, uri, folder / "dicom")
        with phases("conversion"):
            series = load_series(folder / "dicom")
            images.append(save_nifti(series.to_nifti(), folder / "image.nii.gz"))
        first = first or series
    assert first is not None
    return images, first


def _write_result(
    labels: np.ndarray, model_dir: Path, series: Series, name: str, number: int, label: str,
    out: Path,
) -> None:  # fmt: skip
    """``out/seg.dcm`` and ``out/labelmap/`` (masks, masks.json, labels.nii.gz, labels.json:
    the layout roi-to-mask writes for a human collection)."""
    labelmap_file = model_dir / LABELMAP_FILE
    segments = load_labelmap(labelmap_file).segments()
    write_seg(labels, segments, series, out / SEG_FILE,
              algorithm_name=algorithm_name(name, number), algorithm_version=str(number),
              series_description=label)  # fmt: skip
    masks = {seg_name: labels == value for value, (seg_name, _) in segments.items()}
    # origin: what dataset definitions' Origin/Prefer read (docs/datasets.md), from the SEG itself
    report = {"model": {"name": name, "version": number}, "collection": label,
              "series_uid": series.series_uid,
              "origin": collection_origin(out / SEG_FILE, "SEG")}  # fmt: skip
    write_mask_folder(out / LABELMAP_FOLDER, masks, series, report, labelmap_file)


def _deliver(out: Path, to: Path) -> None:
    """``--no-store``: the SEG and the label map folder into ``to``, whole files only."""
    to.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / SEG_FILE, to / f".{SEG_FILE}.partial")
    (to / f".{SEG_FILE}.partial").replace(to / SEG_FILE)
    target = to / LABELMAP_FOLDER
    staging = Path(tempfile.mkdtemp(prefix=f".{LABELMAP_FOLDER}.", dir=to))
    shutil.copytree(out / LABELMAP_FOLDER, staging, dirs_exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _collections(session: XNATSession, session_id: str) -> dict[str, str]:
    """ROI collection label -> assessor id, of one session."""
    rows = list_rows(session, f"{experiment_uri(session_id)}/assessors")
    return {str(r.get("label")): str(r.get("ID")) for r in rows
            if r.get("xsiType") == ROI_COLLECTION_XSI}  # fmt: skip


def _own_collection(session: XNATSession, session_id: str, label: str, work: Path) -> bool:
    """Whether a collection ``label`` is there already (then it is this model's: AI, SEG);
    a human or mixed one, or another type, is refused."""
    found = _collections(session, session_id).get(label)
    if found is None:
        return False
    where = f"ROI collection {label} of session {session_id}"
    folder = work / "existing"
    try:
        files = download_resource(session, resource_uri(assessor_uri(session_id, found), "SEG"),
                                  folder)  # fmt: skip
    except XnatMlError:
        raise XnatMlError(f"{where}: exists and holds no SEG; infer replaces only its own "
                          "AI collection") from None  # fmt: skip
    origins = {collection_origin(path, "SEG") for path in files}
    if origins != {"ai"}:
        raise XnatMlError(f"{where}: exists and is not a model's (its segments are not all "
                          "AUTOMATIC); infer never replaces a human collection")  # fmt: skip
    return True


def _store(
    session: XNATSession, project: str, session_id: str, label: str, out: Path, replaced: bool,
    triggered: bool = False,
) -> str:  # fmt: skip
    """PUT the SEG through /xapi/roi, then its LABELMAP; a collection whose LABELMAP failed is
    removed, or with a Member's rights, left for a rerun to replace (one line says so).

    ``triggered``: one of several jobs set off by one import (each input scan's DICOM sets one
    off) may find the label taken by another that stored first; it then stores nothing (the
    collection is stored once, never overwritten by a twin) and stops as a no-op."""
    try:
        collection = upload_roi_collection(session, project, session_id, label, out / SEG_FILE,
                                           "SEG", overwrite=replaced)  # fmt: skip
    except XnatMlError:
        if triggered and not replaced and label in _collections(session, session_id):
            raise NothingToDo(f"session {session_id}: collection {label} was stored meanwhile "
                              "by a job another scan's DICOM set off; nothing to do") from None
        raise
    try:
        upload_directory(session, assessor_uri(session_id, collection), LABELMAP_RESOURCE,
                         out / LABELMAP_FOLDER, format="NIFTI", content="labelmap")  # fmt: skip
    except XnatMlError as exc:
        if not _remove_collection(session, session_id, collection):
            raise XnatMlError(
                f"ROI collection {label} of session {session_id}: stored, but its "
                f"{LABELMAP_RESOURCE} upload failed ({exc}) and you may not delete the "
                "collection; rerun infer to replace it whole"
            ) from exc
        raise
    return collection


def _remove_collection(session: XNATSession, session_id: str, collection: str) -> bool:
    """Whether the collection is gone (an Owner's right; a Member deletes nothing). Best
    effort: a failure here must not hide the upload's own error."""
    try:
        session.delete(assessor_uri(session_id, collection), query={"removeFiles": "true"},
                       accepted_status=[200, 204, 404])  # fmt: skip
    except xnat_exceptions.XNATError as exc:
        log.warning("ROI collection %s: could not remove it after a failed LABELMAP upload (%s)",
                    collection, exc)  # fmt: skip
        return False
    return True
