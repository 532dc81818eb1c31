"""Runs mirrored to a project's ML_RUNS resource: ``<run id>/`` holds the run folder's files.

``RunUploader`` is the run's ``on_sync``: each call takes ``status.json`` as it is now, uploads
each checkpoint on its own and the other changed files in one atomic zip (every file replaced
whole, never seen half-written), then that status, only if all of them were stored: a reader that
sees a status also finds the checkpoints and metrics it speaks of (and their digests match).

``LiveStatus`` keeps ``status.json`` in ML_RUNS current between those syncs (iteration, loss,
ETA), from a thread of its own: training never waits on the server for it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import RUNS_RESOURCE
from xnat_ml.training.project_files import download, list_paths, read_text, upload_tree
from xnat_ml.training.project_models import check_name
from xnat_ml.training.run_folder import RUNNING, STATUS_FILE, RunFolder

log = logging.getLogger(__name__)
LIVE_EVERY_S = 15.0  # status.json to ML_RUNS between validations: watchable, one small PUT


class RunUploader:
    """``on_sync`` for a run: upload what changed to ``ML_RUNS/<run id>/``, status last.

    ``stored`` is the status ML_RUNS holds already (a resumed run's); the live status pushed
    between syncs must name the same checkpoints as the last status stored."""

    def __init__(
        self, session: XNATSession, project: str, stored: dict[str, Any] | None = None
    ) -> None:
        self.session, self.project = session, project
        self._lock = threading.Lock()  # one upload at a time: the sync's or the live status's
        self._stored_checkpoints = (stored or {}).get("checkpoints") or {}

    def __call__(self, run: RunFolder, changed: Sequence[str]) -> None:
        with self._lock:
            self._sync(run, changed)

    def push_status(self, run: RunFolder) -> bool:
        """Upload status.json alone if it is a running status naming only checkpoints already
        stored; False when it was not (a sync under way carries it, or the next one will)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            data = run.file(STATUS_FILE).read_bytes()
            status = json.loads(data)
            if (status.get("state") != RUNNING
                    or (status.get("checkpoints") or {}) != self._stored_checkpoints):  # fmt: skip
                return False
            with scratch.temporary("live-") as tmp:
                copy = Path(tmp) / STATUS_FILE
                copy.write_bytes(data)
                self._upload(run, {STATUS_FILE: copy})
            return True
        finally:
            self._lock.release()

    def _sync(self, run: RunFolder, changed: Sequence[str]) -> None:
        with scratch.temporary("status-") as tmp:
            status = None
            if STATUS_FILE in changed:  # as it is before the files it speaks of are taken
                status = Path(tmp) / STATUS_FILE
                status.write_bytes(run.file(STATUS_FILE).read_bytes())
            rest = [path for path in changed if path != STATUS_FILE]
            batches = [[path] for path in rest if path.endswith(".pt")]
            batches.append([path for path in rest if not path.endswith(".pt")])
            for batch in batches:
                if batch:
                    self._upload(run, {path: run.file(path) for path in batch})
            if status is not None:
                self._upload(run, {STATUS_FILE: status})
                self._stored_checkpoints = json.loads(status.read_bytes()).get("checkpoints") or {}

    def _upload(self, run: RunFolder, files: dict[str, Path]) -> None:
        stored = {f"{run.run_id}/{path}": source for path, source in files.items()}
        try:
            upload_tree(self.session, self.project, RUNS_RESOURCE, stored, content="ML_RUN")
        except XnatMlError as exc:
            if "HTTP 507" not in str(exc):
                raise
            first = next(iter(stored))
            what = first if len(stored) == 1 else f"{first} and {len(stored) - 1} more file(s)"
            raise XnatMlError(
                f"{RUNS_RESOURCE}/{what}: no space left on the XNAT server (507)"
            ) from exc


class LiveStatus:
    """While open, a thread pushes the run's status.json to ML_RUNS every ``every`` seconds
    when it changed, so ``runs follow`` and the dashboard move during an epoch. A failed push
    is logged once and tried again at the next tick; it never stops training."""

    def __init__(self, uploader: RunUploader, run: RunFolder, every: float | None = None) -> None:
        self.uploader, self.run = uploader, run
        self.every = LIVE_EVERY_S if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"live-{run.run_id}", daemon=True)
        self._pushed: int | None = None  # st_mtime_ns of the status last pushed
        self._warned = False

    def __enter__(self) -> LiveStatus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def tick(self) -> None:
        try:
            changed = self.run.file(STATUS_FILE).stat().st_mtime_ns
            if changed != self._pushed and self.uploader.push_status(self.run):
                self._pushed = changed
        except Exception as exc:  # noqa: BLE001 - training matters more than one status
            if not self._warned:
                log.warning("run %s: live status not uploaded (%s); training goes on",
                            self.run.run_id, exc)  # fmt: skip
                self._warned = True


def run_paths(session: XNATSession, project: str, run_id: str) -> list[str]:
    """Paths (inside ML_RUNS) of the run's files; none when the run is not there."""
    prefix = f"{check_name('run', run_id)}/"
    return [p for p in list_paths(session, project, RUNS_RESOURCE) if p.startswith(prefix)]


def list_runs(session: XNATSession, project: str) -> list[str]:
    """Run ids with a status, sorted."""
    suffix = f"/{STATUS_FILE}"
    paths = list_paths(session, project, RUNS_RESOURCE)
    return sorted(p.removesuffix(suffix) for p in paths if p.endswith(suffix) and p.count("/") == 1)


def read_run_json(session: XNATSession, project: str, run_id: str, file: str) -> Any:
    path = f"{run_id}/{file}"
    text = read_text(session, project, RUNS_RESOURCE, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise XnatMlError(f"{RUNS_RESOURCE}/{path}: not JSON ({exc.msg})") from None


def run_status(session: XNATSession, project: str, run_id: str) -> dict[str, Any] | None:
    """The run's stored status.json, None when the project has no such run."""
    if f"{run_id}/{STATUS_FILE}" not in run_paths(session, project, run_id):
        return None
    return read_run_json(session, project, run_id, STATUS_FILE)


def pull_run(
    session: XNATSession, project: str, run_id: str, dest: Path, only: Sequence[str] = ()
) -> list[Path]:
    """Download the run's files (or those under the run-relative prefixes ``only``) to ``dest``."""
    paths = run_paths(session, project, run_id)
    if not paths:
        raise XnatMlError(f"run {run_id}: not in project {project}'s {RUNS_RESOURCE}")
    if only:
        paths = [p for p in paths if p.removeprefix(f"{run_id}/").startswith(tuple(only))]
    return download(session, project, RUNS_RESOURCE, paths, f"{run_id}/", dest)
