"""Train or fine-tune a bundle into a run folder, and resume a run that died.

``prepare_run`` writes everything a run needs into its folder (config, bundle snapshot, bundle
overrides, data list path, versions); ``execute_run`` needs nothing but that folder, so a
relaunch after a crash or a Slurm time limit is ``python -m xnat_ml.training.runner RUN_DIR``:
it continues from ``latest.pt``.

The training loop is the bundle's own (``ConfigWorkflow``); xnat-ml binds data, folders, length
and device through the bundle's ids and attaches its recorder to the bundle's trainer. A run on
several processes is handed to torchrun (``distributed.py``), which runs this module once per
process.
"""

from __future__ import annotations

import argparse
import errno
import logging
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_ml import __version__
from xnat_ml.atomic import write_json_atomic
from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import (
    TRAIN_CONFIG,
    WEIGHTS,
    bundle_digests,
    file_sha256,
    has_id,
    open_train_workflow,
    read_json_file,
)
from xnat_ml.training.checkpoint import (
    Trainables,
    load_latest,
    load_weights,
    random_transforms,
)
from xnat_ml.training.config import TrainingConfig, check_against_bundle, config_to_json
from xnat_ml.training.distributed import (
    SINGLE,
    Placement,
    check_gpus,
    overlay,
    process_group,
    run_workers,
    worker_placement,
)
from xnat_ml.training.model import CARD_FILE, copy_bundle, read_card, weights_path
from xnat_ml.training.recorder import RunRecorder
from xnat_ml.training.run_checks import check_record
from xnat_ml.training.run_folder import (
    BUNDLE_DIR,
    BUNDLE_OUTPUT_DIR,
    COMPLETED,
    CONFIG_FILE,
    CURVES_FILE,
    FAILED,
    FINAL_STATES,
    KILLED,
    LATEST_FILE,
    LOCAL_DATALIST,
    LOG_FILE,
    NAN,
    RUN_FILE,
    RUNNING,
    RunFolder,
    RunSync,
    sync_run,
)

log = logging.getLogger(__name__)

# Ids xnat-ml sets itself for every run; a config may not override them.
BOUND_IDS = ("bundle_root", "ckpt_dir", "output_dir", "dataset_dir", "train#dataset#data",
             "validate#dataset#data")  # fmt: skip


def read_datalist(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The training and validation lists of a Decathlon-style ``dataset_0.json``, paths made
    absolute against its folder (MONAI's ``load_decathlon_datalist``)."""
    from monai.data import load_decathlon_datalist

    lists = {}
    for key in ("training", "validation"):
        try:
            lists[key] = load_decathlon_datalist(str(path), True, key)
        except (OSError, ValueError, KeyError) as exc:
            raise XnatMlError(f"data list {path}: no usable '{key}' list ({exc})") from None
        if not lists[key]:
            raise XnatMlError(f"data list {path}: the '{key}' list is empty")
    return lists


def versions() -> dict[str, str]:
    import ignite
    import monai
    import torch

    return {"xnat_ml": __version__, "monai": monai.__version__, "torch": torch.__version__,
            "ignite": ignite.__version__, "python": platform.python_version()}  # fmt: skip


def prepare_run(
    run_dir: str | Path,
    config: TrainingConfig,
    model_dir: str | Path,
    datalist: str | Path,
    *,
    finetune: bool = False,
) -> RunFolder:
    """Lay out a new run folder for training ``model_dir``'s bundle on ``datalist``.

    ``finetune`` starts from the model's ``models/model.pt``; otherwise the bundle's network
    starts as the bundle initialises it."""
    target, model_dir, datalist = Path(run_dir), Path(model_dir), Path(datalist).resolve()
    if target.exists() and any(target.iterdir()):
        raise XnatMlError(f"run {target}: folder exists and is not empty (relaunch it to resume)")
    for config_id in config.overrides:
        if config_id.replace("::", "#") in BOUND_IDS:
            raise XnatMlError(f"training config overrides.{config_id}: xnat-ml sets this id")
    overrides = check_against_bundle(config, model_dir)
    read_datalist(datalist)
    check_gpus(target.name, config.resources.processes, config.resources.gpus)
    parent = read_card(model_dir) if (model_dir / CARD_FILE).exists() else None
    weights = weights_path(model_dir) if finetune else None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: a failed preparation leaves no half a run.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        run = RunFolder(staging)
        copy_bundle(model_dir, run.file(BUNDLE_DIR))
        if weights is not None:
            (run.file(BUNDLE_DIR) / WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(weights, run.file(BUNDLE_DIR) / WEIGHTS)
        write_json_atomic(run.file(CONFIG_FILE), config_to_json(config))
        write_json_atomic(run.file(RUN_FILE), {
            "run": target.name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": {"name": config.model.name, "version": config.model.version,
                      "source": str(model_dir.resolve())},
            "parent": {"name": parent.name, "version": parent.version} if parent else None,
            "finetune": finetune,
            "dataset": {"name": config.dataset.name, "version": config.dataset.version,
                        "datalist": str(datalist)},
            "seed": config.training.seed,
            "processes": config.resources.processes,
            "gpus": config.resources.gpus,
            "bundle_overrides": overrides,
            "bundle_digests": bundle_digests(run.file(BUNDLE_DIR)),
            "digests": {CONFIG_FILE: file_sha256(run.file(CONFIG_FILE)),
                        "datalist": file_sha256(datalist)},
            "versions": versions(),
        })  # fmt: skip
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    run = RunFolder(target)
    run.write_status(state="prepared", epoch=0, iteration=0)
    return run


def _bindings(run: RunFolder, datalist: Path) -> dict[str, Any]:
    lists = read_datalist(datalist)
    return {
        "bundle_root": str(run.file(BUNDLE_DIR)),
        "ckpt_dir": str(run.file(BUNDLE_OUTPUT_DIR) / "models"),
        "output_dir": str(run.file(BUNDLE_OUTPUT_DIR) / "eval"),
        "dataset_dir": str(datalist.parent),
        "train#dataset#data": lists["training"],
        "validate#dataset#data": lists["validation"],
    }


def _label_names(datalist: Path) -> list[str]:
    """The data list's label names in value order, background left out (for validation.png)."""
    labels = read_json_file(datalist, f"data list {datalist}").get("labels")
    if not isinstance(labels, dict):
        return []
    values = sorted(int(v) for v in labels if str(v).isdigit() and int(v))
    return [str(labels[str(v)]) for v in values if str(v) in labels]


def _lr_scheduler(parser: Any) -> Any:
    """The scheduler the bundle's ``LrScheduleHandler`` steps, if it has one."""
    if not has_id(parser.config, "train#handlers"):
        return None
    handlers = parser.get_parsed_content("train#handlers")
    return next((h.lr_scheduler for h in handlers if hasattr(h, "lr_scheduler")), None)


class _QuietFileHandler(logging.FileHandler):
    """A log file that loses lines on a full disk rather than print a traceback for each."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


class _LogFile:
    """Send the process's log to the run's log file (appended: a relaunch continues it)."""

    def __init__(self, path: Path) -> None:
        self.handler = _QuietFileHandler(path, mode="a", encoding="utf-8")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )

    def __enter__(self) -> None:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self.handler)

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._level)
        try:
            self.handler.close()
        except OSError:  # its last lines are lost on a full disk; stderr had them
            pass


def datalist_path(run: RunFolder) -> Path:
    """The run's data list on this machine: where a resume fetched it again (``.datalist``, not
    mirrored), else where the run was prepared."""
    local = run.file(LOCAL_DATALIST)
    if local.is_file():
        return Path(local.read_text().strip())
    return Path(run.record()["dataset"]["datalist"])


class RunKilled(BaseException):
    """SIGTERM arrived (Docker stop, Slurm's time limit, the local backend's kill). Not an
    Exception: no handler on the way up may take it for a failure and train on."""


def _on_sigterm(signum: int, _frame: Any) -> None:
    signal.signal(signum, signal.SIG_IGN)  # one is enough: let the status and the sync finish
    raise RunKilled(f"killed by {signal.Signals(signum).name}")


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A background writer (TensorBoard's) that hits a full disk: one line, not a traceback."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno == errno.ENOSPC:
        log.error("%s: %s", getattr(args.thread, "name", "a thread"), args.exc_value)
    else:
        threading.__excepthook__(args)


class _OneLine(logging.Filter):
    """Drop the traceback a library logs with a kill or a full disk (ignite's engine, MONAI's
    StatsHandler): the run's own one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (_killed(error) or _expected(error)):
            record.exc_info, record.exc_text = None, None
        return True


def _one_line_everywhere(stack: ExitStack) -> None:
    """While the run lasts, every log handler (the bundle's StatsHandler has its own) drops the
    traceback of a kill or a full disk."""
    one_line = _OneLine()
    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(each for each in known if isinstance(each, logging.Logger))]
    for handler in {handler for logger in loggers for handler in logger.handlers}:
        handler.addFilter(one_line)
        stack.callback(handler.removeFilter, one_line)


def execute_run(run_dir: str | Path, on_sync: RunSync | None = None) -> dict[str, Any]:
    """Run (or resume) the training in a prepared run folder; return the final status.

    Raises XnatMlError when the run fails, is killed (SIGTERM: status "killed", synced first)
    or cannot store what it claims; a non-finite loss ends it with state "nan"."""
    run = RunFolder(Path(run_dir))
    check_record(run, datalist_path(run))
    if threading.current_thread() is not threading.main_thread():
        return _execute(run, on_sync)
    previous, hook = signal.signal(signal.SIGTERM, _on_sigterm), threading.excepthook
    threading.excepthook = _thread_failed
    try:
        return _execute(run, on_sync)
    finally:
        signal.signal(signal.SIGTERM, previous)
        threading.excepthook = hook


def _execute(run: RunFolder, on_sync: RunSync | None) -> dict[str, Any]:
    record = run.record()
    processes, gpus = int(record.get("processes") or 1), int(record.get("gpus") or 0)
    place = worker_placement(gpus)
    if place is None and processes > 1:
        return _execute_parallel(run, processes, gpus, on_sync)
    place = place or SINGLE
    with ExitStack() as stack:
        scratch = None
        if place.primary:
            stack.enter_context(_LogFile(run.file(LOG_FILE)))
        else:  # the bundle's own handlers write here; only rank 0 writes the run folder
            logging.getLogger().setLevel(logging.WARNING)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rank-")))
        stack.enter_context(process_group(place))
        recorder: RunRecorder | None = None
        try:
            workflow, recorder = _start(run, record, on_sync, place, scratch)
            _one_line_everywhere(stack)
            if recorder.trainer.state.epoch < recorder.trainer.state.max_epochs:
                recorder.write_status(RUNNING)
                workflow.run()
                workflow.finalize()
            state = recorder.stopped or COMPLETED
            recorder.write_status(state, **({"message": "training loss became non-finite"}
                                            if state == NAN else {}))  # fmt: skip
            log.info("run %s %s", run.run_id, state)
        except BaseException as exc:
            killed = _killed(exc)
            if killed is None and not isinstance(exc, Exception):
                raise
            state = KILLED if killed else FAILED
            message = str(killed) if killed else _root_message(exc, run.path)
            if killed or _expected(exc):  # one line: the traceback says nothing more
                log.error("run %s %s: %s", run.run_id, state, message)
            else:
                log.exception("run %s failed", run.run_id)
            try:
                if recorder is not None:
                    recorder.write_status(state, message=message)
                elif place.primary:
                    run.write_status(state=state, message=message)
            except OSError as lost:  # a full disk: the error above says what matters
                log.error("run %s: status not written (%s)", run.run_id, lost)
            raise XnatMlError(f"run {run.run_id}: {message if killed else f'{FAILED}: {message}'}"
                              ) from None
        finally:
            if recorder is not None:
                _close(recorder)
                if place.primary:
                    finish_sync(run, on_sync)
    # Ranks above 0 may finish before rank 0 has written the final status.
    return run.status() if place.primary else {"run": run.run_id, "state": state}


def _close(recorder: RunRecorder) -> None:
    """Close TensorBoard, draw the last curves; on a full disk one line: the run's own error
    (or the final sync) says what matters."""
    try:
        recorder.close()
        if recorder.rows and recorder.place.primary:
            from xnat_ml.training.curves import plot_curves

            plot_curves(recorder.rows, [recorder.key_metric], recorder.run.file(CURVES_FILE))
    except OSError as lost:
        log.error("run %s: TensorBoard events or curves not written (%s)", recorder.run.run_id,
                  lost)  # fmt: skip


FINAL_TRIES = 2  # the end's upload, tried again once after a pause: the last chance to store


def finish_sync(run: RunFolder, on_sync: RunSync | None) -> None:
    """The last sync of a run: what never reached ML_RUNS is tried again. A run that says
    ``completed`` is stored as such only once everything it names is (the status goes last);
    otherwise it ends ``failed`` with the reason, so that a relaunch stores it, and this raises."""
    if on_sync is None:
        return
    error = sync_run(run, on_sync)
    for _retry in range(FINAL_TRIES - 1):
        if error is None:
            return
        time.sleep(1.0)
        error = sync_run(run, on_sync)
    if error is None:
        return
    status = run.status()
    if status.get("state") != COMPLETED:
        return  # already an end that a relaunch resumes; its own error is the one to show
    run.write_status(**{**status, "state": FAILED, "message": f"not stored: {error}"})
    sync_run(run, on_sync)  # best effort: ML_RUNS says failed, or still what it said before
    raise XnatMlError(f"run {run.run_id}: failed: {error}")


def _killed(exc: BaseException) -> RunKilled | None:
    """The RunKilled behind ``exc`` (a bundle's handler may have wrapped it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RunKilled):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _expected(exc: BaseException) -> bool:
    """Failures explained by their one line: ours, and a full disk."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, XnatMlError) or getattr(exc, "errno", None) == errno.ENOSPC


def _execute_parallel(
    run: RunFolder, processes: int, gpus: int, on_sync: RunSync | None
) -> dict[str, Any]:
    """The run on ``processes`` torchrun workers; rank 0 writes the status they end with."""
    check_gpus(run.run_id, processes, gpus)
    try:
        code = run_workers(run, processes, on_sync)
    except RunKilled as exc:  # the workers were stopped; rank 0 may not have said so
        run.write_status(**{**run.status(), "state": KILLED, "message": str(exc)})
        sync_run(run, on_sync)
        raise XnatMlError(f"run {run.run_id}: {exc}") from None
    status = run.status()
    if status.get("state") not in FINAL_STATES:  # a worker died before rank 0 could say so
        status.update(state=FAILED, message=f"a training process exited with code {code}")
        run.write_status(**status)
    finish_sync(run, on_sync)
    status = run.status()
    if status["state"] in (FAILED, KILLED):
        raise XnatMlError(f"run {run.run_id}: {status['state']}: {status.get('message')}")
    return status


def _root_message(exc: BaseException, where: Path) -> str:
    """The first line of the innermost cause: MONAI wraps errors in "Failed to evaluate ...".
    A full disk names the file (``<path>: no space left on device``), else ``where``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{exc.filename or where}: no space left on device"
    if isinstance(exc, XnatMlError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _start(
    run: RunFolder,
    record: dict[str, Any],
    on_sync: RunSync | None,
    place: Placement,
    scratch: Path | None,
) -> tuple[Any, RunRecorder]:
    """Open the bundle's workflow with the run's bindings, restore state, attach the recorder."""
    from monai.utils import set_determinism
    from torch.nn.parallel import DistributedDataParallel

    bindings = _bindings(run, datalist_path(run))
    overrides = {**record["bundle_overrides"], **bindings}
    if place.world > 1:
        bundle = run.file(BUNDLE_DIR)
        train = read_json_file(bundle / TRAIN_CONFIG, f"bundle {bundle}")
        overrides.update(overlay(train, bundle, place, len(bindings["validate#dataset#data"]),
                                 scratch))  # fmt: skip
    workflow = open_train_workflow(run.file(BUNDLE_DIR), overrides)
    workflow.initialize()
    if record["seed"] is not None:
        set_determinism(seed=record["seed"])
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    dataset = getattr(trainer.data_loader, "dataset", None)
    network = trainer.network
    if isinstance(network, DistributedDataParallel):  # checkpoints hold the plain network's keys
        network = network.module
    trainables = Trainables(
        network=network,
        optimizer=trainer.optimizer,
        lr_scheduler=_lr_scheduler(parser),
        scaler=getattr(trainer, "scaler_", None),
        randomizables=random_transforms(getattr(dataset, "transform", None)),
    )
    if not place.primary:  # the bundle's StatsHandlers log through the engines' loggers
        for engine in (trainer, evaluator):
            engine.logger.setLevel(logging.WARNING)
    recorder = RunRecorder(
        run, trainer, evaluator, trainables, on_sync, place,
        cases=[str(item.get("session") or item.get("subject") or f"case{i}")
               for i, item in enumerate(bindings["validate#dataset#data"])],
        label_names=_label_names(datalist_path(run)),
    )  # fmt: skip
    if run.file(LATEST_FILE).exists():
        recorder.restore(load_latest(run.file(LATEST_FILE), trainables))
    elif record["finetune"]:
        load_weights(run.file(BUNDLE_DIR) / WEIGHTS, trainables.network)
    recorder.attach()
    return workflow, recorder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xnat_ml.training.runner",
        description="Run or resume the training in a prepared run folder.",
    )
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = execute_run(args.run_dir)
    except XnatMlError as exc:
        print(f"xnat-ml: error: {exc}", file=sys.stderr)
        return 1
    if status["state"] != COMPLETED:
        print(f"error: run {args.run_dir}: ended with state {status['state']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
