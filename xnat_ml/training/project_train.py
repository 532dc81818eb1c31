"""Train, fine-tune and promote inside a project: configs from ML_CONFIGS, models from ML_MODELS,
data from ML_DATASETS, the run mirrored to ML_RUNS/<run id>/ as it goes.

Everything that can refuse a run is checked before the training starts (config, model and
dataset versions, labels and channels against the model's card, the bundle, room on the server
for the run's first upload); a refused run leaves nothing in ML_RUNS or ML_MODELS. A run id that
is already in ML_RUNS and did not complete is resumed from its ``latest.pt`` (pulled from
ML_RUNS when the local folder is gone).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.atomic import write_bytes_atomic
from xnat_ml.datasets.fetch import fetch_dataset
from xnat_ml.datasets.versions import DATALIST_FILE, find_version, read_json
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import MODELS_RESOURCE, RUNS_RESOURCE
from xnat_ml.training.bundle import WEIGHTS, read_json_file
from xnat_ml.training.config import check_against_bundle, parse_config
from xnat_ml.training.digests import check_files
from xnat_ml.training.distributed import check_gpus
from xnat_ml.training.model import ModelCard, Ref, validate_model, weights_path
from xnat_ml.training.project_configs import read_config
from xnat_ml.training.project_files import download
from xnat_ml.training.project_models import (
    check_name,
    find_model,
    parse_version,
    pull_model,
    read_model_card,
    split_ref,
    store_version,
    version_digests,
)
from xnat_ml.training.project_runs import LiveStatus, RunUploader, pull_run, run_status
from xnat_ml.training.promotion import promote
from xnat_ml.training.run_folder import (
    BEST_FILE,
    BUNDLE_DIR,
    COMPLETED,
    CONFIG_FILE,
    LATEST_FILE,
    LOCAL_DATALIST,
    RUN_FILE,
    STATUS_FILE,
    RunFolder,
)
from xnat_ml.training.runner import execute_run, prepare_run

DEFAULT_WORK = Path.home() / ".cache" / "xnat-ml" / "work"


@dataclass
class TrainRequest:
    project: str
    config: str
    run_id: str | None = None
    from_model: str | None = None  # NAME[:N]: a fine-tune from that model version
    model: str | None = None  # NAME[:N]: train that model's bundle instead of the config's
    dataset: str | None = None  # NAME[:N]: instead of the config's dataset
    work_dir: Path = DEFAULT_WORK
    cache: Path | None = None  # the dataset cache root (files/ in it); None: the user's


def train_in_project(session: XNATSession, request: TrainRequest) -> dict[str, Any]:
    """Start (or resume) the run; its final status. Raises XnatMlError when refused or failed."""
    run_id = check_name("run", request.run_id or _default_run_id(request.config))
    local = local_run_folder(request.work_dir, session.server, request.project, run_id)
    stored = run_status(session, request.project, run_id)
    if stored is not None and stored.get("state") == COMPLETED:
        raise XnatMlError(
            f"run {run_id}: already completed in project {request.project}; choose another run id"
        )
    uploader = RunUploader(session, request.project, stored)
    if stored is None and not (local / RUN_FILE).exists():
        _prepare(session, request, local)
        try:  # the first upload: a server without room refuses the run before any training
            uploader(RunFolder(local), list(RunFolder(local).changed_files()))
        except XnatMlError as exc:
            shutil.rmtree(local, ignore_errors=True)
            raise XnatMlError(
                f"run {run_id}: cannot be stored in project {request.project}'s {RUNS_RESOURCE} "
                f"({exc}); nothing was written"
            ) from exc
    else:
        _ready_to_resume(session, request, local)
    with LiveStatus(uploader, RunFolder(local)):
        return execute_run(local, on_sync=uploader)


def local_run_folder(work_dir: Path, server: str, project: str, run_id: str) -> Path:
    """Where a run is trained: ``WORK/runs/<server>/<project>/<run id>``. The server is part of
    it because a run folder found there is resumed: the same project and run id on another
    XNAT (or on a server started afresh) is another run."""
    where = urlsplit(server)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{where.netloc}{where.path}").strip("_")
    key = f"{readable}-{sha256(server.encode()).hexdigest()[:8]}"
    return work_dir / "runs" / key / project / run_id


def _default_run_id(config: str) -> str:
    return f"{config}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def _prepare(session: XNATSession, request: TrainRequest, local: Path) -> None:
    """Resolve and check everything, fetch the data, lay out the local run folder."""
    project = request.project
    config = read_config(session, project, request.config)
    check_gpus(local.name, config.resources.processes, config.resources.gpus)  # before the fetch
    if request.from_model or request.model:
        model_name, model_number = split_ref("model", request.from_model or request.model)
    else:
        model_name = config.model.name
        model_number = parse_version(f"config {request.config} model", config.model.version)
    if request.dataset:
        data_name, data_number = split_ref("dataset", request.dataset)
    else:
        data_name = config.dataset.name
        data_number = parse_version(f"config {request.config} dataset", config.dataset.version)
    model_number = find_model(session, project, model_name, model_number)
    version = find_version(session, project, data_name, data_number)
    card = read_model_card(session, project, model_name, model_number)
    listing = read_json(session, project, version, DATALIST_FILE)
    label = f"model {model_name} v{model_number}"
    check_data_fits(listing, card, f"dataset {data_name} v{version.number}", label)
    config = dataclasses.replace(
        config,
        model=Ref(model_name, str(model_number)),
        dataset=Ref(data_name, str(version.number)),
        overrides={**card.overrides, **config.overrides},  # what the weights need, then the run's
    )
    request.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="model-", dir=request.work_dir) as tmp:
        # digest-checked before any of its files is parsed
        model_dir = pull_model(session, project, model_name, model_number, Path(tmp) / "model")
        validate_model(model_dir, label)
        if request.from_model:
            weights_path(model_dir, label)
        check_against_bundle(config, model_dir, label, cases=len(listing.get("training") or []))
        datalist = _fetch(session, project, data_name, version.number, request)
        prepare_run(local, config, model_dir, datalist, finetune=bool(request.from_model))


def _fetch(session: XNATSession, project: str, name: str, number: int, request: TrainRequest):
    dest = request.work_dir / "datasets" / project / name / f"v{number}"
    return fetch_dataset(session, project, name, dest, number=number, cache=request.cache,
                         progress=False).datalist  # fmt: skip


def check_data_fits(datalist: dict[str, Any], card: ModelCard, data: str, model: str) -> None:
    """The dataset's labels are the model's (same value, same name) and its cases have as many
    image channels as the model takes."""
    known = {value: name.casefold() for value, name in card.labels.items()}
    for key, name in sorted((datalist.get("labels") or {}).items()):
        value = int(key) if str(key).isdigit() else None
        if value == 0:
            continue
        if value is None or known.get(value) != str(name).casefold():
            listed = ", ".join(f"{v} {n}" for v, n in sorted(card.labels.items()) if v)
            raise XnatMlError(
                f"{data}: label {key} '{name}' is not in {model}'s label map ({listed})"
            )
    cases = datalist.get("training") or []
    if cases:
        image = cases[0].get("image")
        count = len(image) if isinstance(image, list) else 1
        if count != len(card.input_channels):
            raise XnatMlError(
                f"{data}: {count} image channel(s) per case, {model} takes "
                f"{len(card.input_channels)} ({', '.join(card.input_channels)})"
            )


def _ready_to_resume(session: XNATSession, request: TrainRequest, local: Path) -> None:
    """A run that died: its local folder, or else its files pulled back from ML_RUNS, with the
    data list fetched again (the folder may come from another machine)."""
    project, run_id = request.project, local.name
    if not (local / RUN_FILE).exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=_parent(local)))
        try:
            pull_run(session, project, run_id, staging)
            shutil.rmtree(local, ignore_errors=True)
            staging.rename(local)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    run = RunFolder(local)
    record = check_snapshot(session, project, run)
    dataset = record["dataset"]
    datalist = _fetch(session, project, dataset["name"], int(dataset["version"]), request)
    # run.json stays as prepared (its digests are checked): the local path goes beside it.
    write_bytes_atomic(run.file(LOCAL_DATALIST), str(datalist.resolve()).encode())
    weights = run.file(BUNDLE_DIR) / WEIGHTS
    if record["finetune"] and not run.file(LATEST_FILE).exists() and not weights.exists():
        name, number = record["model"]["name"], int(record["model"]["version"])
        prefix = f"{name}/v{number}/"
        bundle = run.file(BUNDLE_DIR)
        download(session, project, MODELS_RESOURCE, [prefix + WEIGHTS], prefix, bundle)


def check_snapshot(session: XNATSession, project: str, run: RunFolder) -> dict[str, Any]:
    """A run folder (local, or pulled back from ML_RUNS) before it is resumed or promoted: its
    bundle snapshot is its model version's files as that version's digests record them (the
    weights may be left out), its config is plain data as at push, and the bundle overrides it
    will run with are the ones that config makes. The run's record, checked."""
    record = run.record()
    try:
        name = check_name("model", record["model"]["name"])
        number = int(record["model"]["version"])
    except (TypeError, KeyError, ValueError, XnatMlError):
        raise XnatMlError(f"run {run.run_id}: {RUN_FILE} names no model version") from None
    label = f"run {run.run_id}: bundle of model {name} v{number}"
    bundle = run.file(BUNDLE_DIR)
    for cache in list(bundle.rglob("__pycache__")):  # the bundle's imports wrote them; a run
        shutil.rmtree(cache, ignore_errors=True)  # from storage must not bring its own
    weights = WEIGHTS.rpartition("/")[0] + "/"
    check_files(bundle, version_digests(session, project, name, number), label,
                optional=(weights,))  # fmt: skip
    value = read_json_file(run.file(CONFIG_FILE), f"run {run.run_id}", CONFIG_FILE)
    config = parse_config(value, f"run {run.run_id} {CONFIG_FILE}")
    if check_against_bundle(config, bundle, label) != record.get("bundle_overrides"):
        raise XnatMlError(f"run {run.run_id}: {RUN_FILE} holds bundle overrides its "
                          f"{CONFIG_FILE} does not make; the run cannot be used")  # fmt: skip
    return record


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def promote_in_project(
    session: XNATSession, project: str, run_id: str, name: str, task: str | None = None
) -> tuple[int, ModelCard]:
    """The completed run's best weights become ``ML_MODELS/<name>/v<N>/``; N and the card."""
    check_name("model", name)
    status = run_status(session, project, check_name("run", run_id))
    if status is None:
        raise XnatMlError(f"run {run_id}: not in project {project}'s {RUNS_RESOURCE}")
    if status.get("state") != COMPLETED:
        raise XnatMlError(f"run {run_id}: is {status.get('state')}, not {COMPLETED}")
    with scratch.temporary("promote-") as tmp:
        run_dir = Path(tmp) / run_id
        needed = (RUN_FILE, CONFIG_FILE, STATUS_FILE, BEST_FILE, LATEST_FILE, f"{BUNDLE_DIR}/")
        pull_run(session, project, run_id, run_dir, only=needed)
        check_snapshot(session, project, RunFolder(run_dir))
        promote(run_dir, Path(tmp) / "model", name, "", task=task)  # numbered when stored
        return store_version(session, project, Path(tmp) / "model", name)
