"""Ignite handlers that turn a bundle's trainer and evaluator into a recorded, resumable run.

Attached to the bundle's own engines after ``ConfigWorkflow.initialize()``; they fire after the
bundle's handlers (ignite runs handlers in the order they were added), so at a validation epoch
the evaluator has already run and the LR scheduler has already stepped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from xnat_ml.training.bundle import file_sha256
from xnat_ml.training.checkpoint import Trainables, save_latest, save_weights
from xnat_ml.training.curves import VALIDATION_TITLE, plot_case_dice, plot_curves
from xnat_ml.training.distributed import SINGLE, Placement, all_agree
from xnat_ml.training.run_folder import (
    BEST_FILE,
    CURVES_FILE,
    LATEST_FILE,
    NAN,
    RUNNING,
    TENSORBOARD_DIR,
    VALIDATION_FILE,
    RunFolder,
    RunSync,
    sync_run,
)

log = logging.getLogger(__name__)
STATUS_EVERY_S = 2.0  # status.json between epochs: often enough to watch, cheap enough to write


class RunRecorder:
    """Status, metrics, TensorBoard, curves, checkpoints and NaN stop for one run.

    Under data-parallel training every rank has one: all take part in the NaN stop, only rank 0
    writes the run folder."""

    def __init__(
        self,
        run: RunFolder,
        trainer: Any,
        evaluator: Any,
        trainables: Trainables,
        on_sync: RunSync | None = None,
        place: Placement = SINGLE,
        cases: Sequence[str] = (),
        label_names: Sequence[str] = (),
    ) -> None:
        self.run, self.trainer, self.evaluator = run, trainer, evaluator
        self.cases, self.label_names = list(cases), list(label_names)  # for validation.png
        self.trainables, self.on_sync, self.place = trainables, on_sync, place
        self.rows: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": None, "epoch": None}
        self.stopped: str | None = None  # NAN when a loss went non-finite
        self.latest_epoch: int | None = None  # epoch of the last latest.pt
        self.checkpoints: dict[str, str] = {}  # sha256 of model.pt and latest.pt as saved
        self._losses: list[float] = []
        self._last_loss: float | None = None
        self._validated_epoch = -1
        self._started = time.monotonic()
        self._first_iteration: int | None = None
        self._last_status = 0.0
        self._writer: Any = None

    # ---- resume -----------------------------------------------------------------------------
    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a ``latest.pt``: epoch counter, best so far, metrics up to that epoch."""
        epoch, iteration = saved["trainer"]["epoch"], saved["trainer"]["iteration"]
        self.trainer.state.epoch, self.trainer.state.iteration = epoch, iteration
        self.best = dict(saved["best"])
        self.latest_epoch = epoch
        if not self.place.primary:
            return
        self.checkpoints = {name: file_sha256(self.run.file(name))
                            for name in (BEST_FILE, LATEST_FILE) if self.run.file(name).exists()}
        self.rows = [row for row in self.run.metrics() if int(row["epoch"]) <= epoch]
        self.run.write_metrics(self.rows)
        log.info("resuming run %s at epoch %d, iteration %d", self.run.run_id, epoch, iteration)

    # ---- wiring -----------------------------------------------------------------------------
    def attach(self) -> None:
        from ignite.engine import Events
        from torch.utils.tensorboard import SummaryWriter

        self.trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        if not self.place.primary:
            return
        # purge_step drops events a dead run wrote after its last checkpoint.
        self._writer = SummaryWriter(
            str(self.run.file(TENSORBOARD_DIR)), purge_step=self.trainer.state.epoch + 1
        )
        self.trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        self.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    # ---- handlers ---------------------------------------------------------------------------
    def _iteration(self, engine: Any) -> None:
        from monai.handlers import from_engine

        loss = from_engine(["loss"], first=True)(engine.state.output)
        loss = float(loss[0] if isinstance(loss, list | tuple) else loss)
        self._last_loss = loss
        if self._first_iteration is None:
            self._first_iteration = engine.state.iteration - 1
        if not all_agree(math.isfinite(loss), self.place):
            self.stopped = NAN
            what = loss if not math.isfinite(loss) else "non-finite in another process"
            log.error("loss is %s at epoch %d, iteration %d: stopping",
                      what, engine.state.epoch, engine.state.iteration)  # fmt: skip
            self.write_status(NAN, message=f"loss became {what}")
            engine.terminate()
            return
        if not self.place.primary:
            return
        self._losses.append(loss)
        if time.monotonic() - self._last_status >= STATUS_EVERY_S:
            self.write_status(RUNNING)

    def _validated(self, evaluator: Any) -> None:
        self._validated_epoch = self.trainer.state.epoch

    def _epoch(self, engine: Any) -> None:
        if self.stopped:
            return
        epoch = engine.state.epoch
        row: dict[str, Any] = {
            "epoch": epoch,
            "iteration": engine.state.iteration,
            "train_loss": sum(self._losses) / len(self._losses) if self._losses else "",
            "lr": self._lr(),
            "elapsed_s": round(time.monotonic() - self._started, 3),
        }
        self._losses = []
        validated = self._validated_epoch == epoch
        if validated:
            metrics = {k: float(v) for k, v in self.evaluator.state.metrics.items()
                       if isinstance(v, int | float)}  # fmt: skip
            row.update(metrics)
            self._update_best(epoch, metrics)
        self.rows.append(row)
        self.run.write_metrics(self.rows)
        for key, value in row.items():
            if key not in ("epoch", "iteration", "elapsed_s") and value != "":
                self._writer.add_scalar(key, value, epoch)
        self._writer.flush()
        if validated:
            save_latest(self.run.file(LATEST_FILE), self.trainables, epoch,
                        engine.state.iteration, self.best)  # fmt: skip
            self.checkpoints[LATEST_FILE] = file_sha256(self.run.file(LATEST_FILE))
            self.latest_epoch = epoch
            plot_curves(self.rows, [self.key_metric], self.run.file(CURVES_FILE))
            self._plot_validation(epoch)
        self.write_status(RUNNING)
        if validated:
            self.sync()

    # ---- helpers ----------------------------------------------------------------------------
    @property
    def key_metric(self) -> str:
        return getattr(self.evaluator.state, "key_metric_name", None) or "metric"

    def _update_best(self, epoch: int, metrics: dict[str, float]) -> None:
        current = metrics.get(self.key_metric)
        if current is None or not math.isfinite(current):
            return
        best = self.best["metric"]
        better = getattr(self.evaluator, "metric_cmp_fn", lambda new, old: new > old)
        if best is None or better(current, best):
            save_weights(self.run.file(BEST_FILE), self.trainables.network)
            self.checkpoints[BEST_FILE] = file_sha256(self.run.file(BEST_FILE))
            # latest.pt keeps the best weights' digest too: promote checks the status by it.
            self.best = {"metric": current, "epoch": epoch, "sha256": self.checkpoints[BEST_FILE]}

    def _plot_validation(self, epoch: int) -> None:
        """validation.png: this validation's Dice per case and label, from the Dice metric's
        per-image details (MONAI's ``save_details``); none when the key metric is not a Dice or
        the details do not cover the validation list (one rank's share under data parallel)."""
        details = getattr(self.evaluator.state, "metric_details", {}).get(self.key_metric)
        if "dice" not in self.key_metric.lower() or not hasattr(details, "detach"):
            return
        rows = details.detach().float().cpu().numpy()
        if rows.ndim != 2 or rows.shape[0] != len(self.cases) or not self.cases:
            return
        names = (self.label_names if len(self.label_names) == rows.shape[1]
                 else [f"label {i + 1}" for i in range(rows.shape[1])])  # fmt: skip
        dice = {name: rows[:, i].tolist() for i, name in enumerate(names)}
        title = VALIDATION_TITLE.format(epoch=epoch)
        plot_case_dice(self.cases, dice, title, self.run.file(VALIDATION_FILE))

    def _lr(self) -> float | str:
        groups = getattr(self.trainables.optimizer, "param_groups", None)
        return float(groups[0]["lr"]) if groups else ""

    def _eta(self) -> float | None:
        state = self.trainer.state
        done = state.iteration - (self._first_iteration or 0)
        total = (state.max_epochs or 0) * (state.epoch_length or 0)
        if done <= 0 or not total:
            return None
        return round((time.monotonic() - self._started) / done * max(total - state.iteration, 0))

    def write_status(self, state: str, **extra: Any) -> None:
        """status.json now; ``loss`` is the last iteration's (rank 0's)."""
        if not self.place.primary:
            return
        engine = self.trainer.state
        last = next((r for r in reversed(self.rows) if self.key_metric in r), {})
        self.run.write_status(
            state=state,
            epoch=engine.epoch,
            max_epochs=engine.max_epochs,
            iteration=engine.iteration,
            max_iterations=(engine.max_epochs or 0) * (engine.epoch_length or 0) or None,
            metric_name=self.key_metric,
            metric=float(last[self.key_metric]) if last.get(self.key_metric) not in
            (None, "") else None,
            best_metric=self.best["metric"],
            best_epoch=self.best["epoch"],
            latest_epoch=self.latest_epoch,
            eta_s=self._eta() if state == RUNNING else 0,
            loss=self._last_loss,
            checkpoints=dict(self.checkpoints),
            **extra,
        )
        self._last_status = time.monotonic()

    def sync(self) -> str | None:
        """Hand what changed to ``on_sync`` (workers of a parallel run have none: their
        launcher mirrors the run folder); the failure, None when all is stored."""
        return sync_run(self.run, self.on_sync)
