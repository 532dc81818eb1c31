"""The job runner behind the server's launch API: worker pool, monitor, job records, recovery.

A launch request only checks inputs and writes a `Created` job. A worker thread then resolves it
against the archive over REST (as the launching user, through an alias token issued for the job
and revoked when the job ends, whatever the end), stages its inputs and hands it to the backend;
one monitor thread polls every running job, and when one ends a worker keeps its logs and
uploads its outputs. Workers are busy only while
staging and uploading, so a Slurm or Docker backend can hold hundreds of jobs at once. Workers
talk to the server over HTTP like any container would: nothing here imports the server.

A job that the server's own stop ended (a local job, which cannot outlive it; any job whose
outputs were being uploaded) is requeued at the next start, keeping its id (`recover`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from xnat_ml.containers import jobs
from xnat_ml.containers.archive import ArchiveClient
from xnat_ml.containers.backends import Backend, BackendState, get_backend
from xnat_ml.containers.command import Command, Wrapper
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.launch import complete, outcome_of, start
from xnat_ml.containers.registry import CommandRecord, with_ids
from xnat_ml.containers.resolve import Resolution, resolve
from xnat_ml.containers.slots import Slots
from xnat_ml.errors import XnatMlError

log = logging.getLogger(__name__)

TokenFactory = Callable[[str, int], tuple[str, str]]  # (username, job id) -> (alias, secret)
TokenRevoker = Callable[[int], None]  # job id: revoke every token issued for the job
JobWrites = Callable[[int], None]  # job id: keep, or undo, what the job wrote with its tokens
FaultPoint = Callable[[str], None]  # the server's test hook (server/faults.py): die at a point
JobUrl = Callable[[str], str]  # backend name -> the server's URL for its jobs (XnatMlError: none)
POLL_S = 0.5
KILL_MARK = "kill-requested"  # in a job's folder: a kill asked before the server stopped


@dataclass
class _Loaded:
    """What a worker needs of a job, read in one short database session."""

    job_id: int
    command: Command
    wrapper: Wrapper
    project: str
    username: str
    host: str
    params: dict
    backend: str
    backend_job_id: str | None
    job_dir: Path
    workflow_id: int | None = None


@dataclass
class _Running:
    job: _Loaded
    resolution: Resolution
    backend: Backend
    backend_id: str


def parse_raw_inputs(entries: list[str] | tuple) -> dict[str, set[str]]:
    """ "command:input" entries (the server's raw-input setting) → command name → input names."""
    table: dict[str, set[str]] = {}
    for entry in entries:
        command, sep, name = str(entry).rpartition(":")
        if not sep or not command or not name:
            raise XnatMlError(f"raw input {entry!r}: expected COMMAND:INPUT")
        table.setdefault(command, set()).add(name)
    return table


def _stored(step: str, uploaded: list[str] | None) -> str:
    """A complete job's message: the last step it reported on its workflow (what a command that
    stores its results itself says it stored), then what the output handlers uploaded."""
    return f"{step}; uploaded {len(uploaded)} output(s)" if uploaded else step


class ContainerService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        work_root: Path,
        token_factory: TokenFactory,
        revoke_tokens: TokenRevoker,
        backend: str = "local",
        workers: int = 4,
        backend_options: dict | None = None,
        readers: sessionmaker[Session] | None = None,
        raw_inputs: list[str] | tuple = (),
        keep_writes: JobWrites = lambda _job_id: None,
        undo_writes: JobWrites | None = None,
        max_attempts: int = 3,
        fault_point: FaultPoint = lambda _name: None,
        job_url: JobUrl = lambda _backend: "",
    ) -> None:
        """`sessions` write (BEGIN IMMEDIATE: the write lock); `readers`, if given, only read
        (a plain BEGIN, which never waits for a writer). A read that queued behind busy writers
        once made a kill request fail with "database is locked". `raw_inputs` ("command:input")
        names the inputs whose values are spliced into command lines unquoted.

        A job's results are all or none: once it ends, `keep_writes(job id)` (Complete) or
        `undo_writes(job id)` (any other end) settles everything written with its tokens. With
        no `undo_writes`, a failed upload deletes over REST the resources it created instead.
        A job is queued at most `max_attempts` times in all: requeues after restarts included,
        so that a job that crashes the server cannot loop. `job_url(backend name)` is the URL
        the job and its staging call the server at, asked when the job is staged (a server
        restarted on another port gives its new one), never taken from the launch request."""
        if max_attempts < 1:
            raise XnatMlError(f"container service: max attempts {max_attempts} must be 1 or more")
        self.sessions = sessions
        self.readers = readers or sessions
        self.work_root = Path(work_root)
        self.token_factory = token_factory
        self.revoke_tokens = revoke_tokens
        self.keep_writes = keep_writes
        self.undo_writes = undo_writes
        self.max_attempts = max_attempts
        self.fault_point = fault_point
        self.job_url = job_url
        self.backend_name = backend
        self.backend_options = backend_options or {}
        self.raw_inputs = parse_raw_inputs(raw_inputs)
        self._backends: dict[str, Backend] = {}
        self._slots: dict[str, Slots] = {}
        self._lock = threading.Lock()
        self._kill_requested: set[int] = set()
        self._retired: set[int] = set()  # records deleted with their project: never upload
        self._running: dict[int, _Running] = {}
        self._resumed = False
        self._closing = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xnat-ml-job")
        self._monitor = threading.Thread(target=self._watch, name="xnat-ml-monitor", daemon=True)
        self._monitor.start()

    def backend(self, name: str | None = None) -> Backend:
        name = name or self.backend_name
        with self._lock:
            if name not in self._backends:
                self._backends[name] = get_backend(
                    name, self.work_root / "backends" / name, **self.backend_options
                )
            return self._backends[name]

    def slots(self, name: str) -> Slots:
        """The backend's job slots (its `slots` attribute: None, or absent, is no limit)."""
        backend = self.backend(name)
        with self._lock:
            if name not in self._slots:
                self._slots[name] = Slots(getattr(backend, "slots", None), self.submit)
            return self._slots[name]

    def _release_slot(self, job_id: int) -> None:
        with self._lock:
            held = list(self._slots.values())
        for slots in held:
            slots.release(job_id)

    # ------------------------------------------------------------------ requests

    def submit(self, job_id: int) -> None:
        self.pool.submit(self._guarded, self._launch, job_id)

    def kill(self, job_id: int) -> str:
        """Ask a job to stop; returns its status afterwards (Killed, or already final).

        A running job is only read (no write lock: a kill must not queue behind writers) and
        its backend called with no transaction open; the monitor then records it Killed."""
        self._kill_requested.add(job_id)
        with self.readers() as db:
            job = db.get(Job, job_id)
            if job is None:
                self._kill_requested.discard(job_id)
                raise XnatMlError(f"container {job_id}: not found")
            status, backend_name, backend_id = job.status, job.backend, job.backend_job_id
            work_dir = job.work_dir
        if status in jobs.FINAL_STATUSES:
            self._kill_requested.discard(job_id)
            return status
        if status == jobs.CREATED:
            with self.sessions() as db:  # a worker may have started it since the read
                job = db.get(Job, job_id)
                if job.status == jobs.CREATED:
                    job.set_status(jobs.KILLED, "killed before it started")
                    db.commit()
                    self.revoke_tokens(job_id)
                    self._release_slot(job_id)
                    return jobs.KILLED
                status, backend_id = job.status, job.backend_job_id
            if status in jobs.FINAL_STATUSES:
                return status
        if work_dir:  # durable without the write lock: a restart ends the job Killed
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            (Path(work_dir) / KILL_MARK).touch()
        if backend_id:
            self.backend(backend_name).kill(backend_id)
        return jobs.KILLED

    def retire(self, retired: list[tuple[int, str, str | None, str]]) -> None:
        """Jobs whose records went with their project, as (id, backend, backend id, work dir):
        stop them, drop them from the monitor, never upload their outputs, remove their files."""
        with self._lock:
            self._retired.update(job_id for job_id, *_rest in retired)
            for job_id, *_rest in retired:
                self._running.pop(job_id, None)
        for _job_id, backend_name, backend_id, work_dir in retired:
            backend = self._backend_or_none(backend_name) if backend_id else None
            if backend is not None:
                backend.kill(backend_id)
                backend.cleanup(backend_id)
            if work_dir:
                shutil.rmtree(work_dir, ignore_errors=True)
        for job_id, *_rest in retired:  # after the kill: the next job in line may start now
            self._release_slot(job_id)

    def recover(self) -> None:
        """At start, before the server listens: settle the jobs the last server process left
        unfinished, so that the server's own stop (a crash, a kill -9, a restart) never costs
        a job its results.

        A job still running on a backend that re-attaches (Docker, Slurm) is left to
        `resume_pending`. Every other one that had started (a local job, which cannot outlive
        the server; any job whose outputs were being uploaded) is stopped and runs again from
        scratch: `_requeue`. A job whose kill was asked ends Killed; a `Created` one only loses
        what an earlier attempt may have left. Backends are reached with no transaction open."""
        with self.readers() as db:
            unfinished = select(
                Job.id, Job.status, Job.backend, Job.backend_job_id, Job.work_dir
            ).where(Job.status.in_(jobs.UNFINISHED))
            rows = list(db.execute(unfinished))
        for job_id, status, backend_name, backend_id, work_dir in rows:
            try:
                self._recover_one(job_id, status, backend_name, backend_id, work_dir)
            except Exception:  # the server must start; the job is tried again at the next one
                log.exception("container %s: could not be recovered after a restart", job_id)

    def _recover_one(
        self, job_id: int, status: str, backend_name: str, backend_id: str | None, work_dir: str
    ) -> None:
        backend = self._backend_or_none(backend_name)
        still_runs = backend is not None and backend.can_reattach and bool(backend_id)
        if status == jobs.RUNNING and still_runs:
            return
        if backend is not None and backend_id and status != jobs.CREATED:
            self._stop_stale(backend, backend_id)
        if work_dir and (Path(work_dir) / KILL_MARK).exists():
            self._finish(job_id, jobs.KILLED, "killed on request before the server stopped")
        elif status == jobs.CREATED:
            self._clean_slate(job_id, work_dir)
        elif backend is None:
            message = f"server restarted while the job ran; no {backend_name} backend now"
            self._finish(job_id, jobs.FAILED, message)
        else:
            self._requeue(job_id, work_dir)

    def _stop_stale(self, backend: Backend, backend_id: str) -> None:
        """Stop what an earlier server process started for a job, and release it."""
        stop_orphan = getattr(backend, "stop_orphan", None)
        if stop_orphan is not None:  # a local process: found by its marker, never by pid alone
            stop_orphan(backend_id)
        else:
            backend.kill(backend_id)
        backend.cleanup(backend_id)

    def _clean_slate(self, job_id: int, work_dir: str) -> None:
        """What a job's next attempt must not inherit: its mounts, its tokens (a process still
        holding one can write no more), then its writes (undone)."""
        if work_dir:
            shutil.rmtree(Path(work_dir) / "mounts", ignore_errors=True)
        self.revoke_tokens(job_id)
        self._settle_writes(job_id, jobs.FAILED)

    def _requeue(self, job_id: int, work_dir: str) -> None:
        """The same record back to `Created` (its id, hence its Event Service delivery, kept),
        started again by `resume_pending`; Failed instead once it used `max_attempts`."""
        self._clean_slate(job_id, work_dir)
        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is None or job.finished:
                return
            attempts = job.attempts
            if attempts < self.max_attempts:
                job.backend_job_id = None
                job.exit_code = None
                attempt = f"attempt {attempts + 1} of {self.max_attempts}"
                job.set_status(jobs.CREATED, f"requeued after a server restart ({attempt})")
                db.commit()
                log.warning("container %s: requeued after a server restart", job_id)
                return
        message = f"the server stopped while the job ran, in each of its {attempts} attempts"
        self._finish(job_id, jobs.FAILED, f"{message}; not requeued")

    def resume_pending(self) -> None:
        """Once, when the server answers requests: re-queue Created jobs, re-attach Running ones."""
        with self._lock:
            if self._resumed:
                return
            self._resumed = True
        # Workers start only after the commit: a worker writing (alias token) while this loop's
        # SQLite read is still open deadlocks the two ("database is locked").
        with self.sessions() as db:
            unfinished = select(Job).where(Job.status.in_([jobs.CREATED, jobs.RUNNING]))
            waiting = list(db.scalars(unfinished))
            for job in waiting:
                if job.status == jobs.RUNNING:
                    job.history.append(
                        jobs.JobEvent(status=jobs.RUNNING, message="re-attached after a restart")
                    )
            resume = [(job.id, job.status) for job in waiting]
            db.commit()
        for job_id, status in resume:
            if status == jobs.CREATED:
                self.submit(job_id)
            else:
                self.pool.submit(self._guarded, self._reattach, job_id)

    def shutdown(self) -> None:
        self._closing.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _backend_or_none(self, name: str) -> Backend | None:
        try:
            return self.backend(name)
        except XnatMlError as exc:
            log.warning("backend %s unavailable: %s", name, exc)
            return None

    # ------------------------------------------------------------------ work

    def _guarded(self, work: Callable[[int], None], job_id: int) -> None:
        try:
            work(job_id)
        except Exception as exc:  # a worker must record every failure, never die silently
            log.exception("container %s failed", job_id)
            self._finish(job_id, jobs.FAILED, f"internal error: {type(exc).__name__}: {exc}")

    def _load(self, job_id: int) -> _Loaded | None:
        with self.readers() as db:
            job = db.get(Job, job_id)
            if job is None or job.finished:
                return None
            record = db.get(CommandRecord, job.command_id)
            if record is None:
                loaded = None
            else:
                command = with_ids(db, record)
                loaded = _Loaded(
                    job_id=job.id,
                    command=command,
                    wrapper=command.wrapper(job.wrapper_id),
                    project=job.project,
                    username=job.username,
                    host="",
                    params=dict(job.params or {}),
                    backend=job.backend,
                    backend_job_id=job.backend_job_id,
                    job_dir=Path(job.work_dir),
                    workflow_id=job.workflow_id,
                )
        if loaded is None:
            self._finish(job_id, jobs.FAILED, "its command was deleted before it ran")
            return None
        try:
            loaded.host = self.job_url(loaded.backend)
        except XnatMlError as exc:
            self._finish(job_id, jobs.FAILED, str(exc))
            return None
        return loaded

    def _client(self, job: _Loaded) -> tuple[ArchiveClient, dict[str, str]]:
        """A REST client and the container's XNAT_* variables, on a fresh alias token, with
        XNAT_WORKFLOW_ID as XNAT's Container Service sets it."""
        alias, secret = self.token_factory(job.username, job.job_id)
        client = ArchiveClient(
            job.host, alias, secret, renew=lambda: self.token_factory(job.username, job.job_id)
        )
        env = {"XNAT_HOST": job.host.rstrip("/"), "XNAT_USER": alias, "XNAT_PASS": secret}
        if job.workflow_id is not None:  # where the job reports its step and percentage
            env["XNAT_WORKFLOW_ID"] = str(job.workflow_id)
        return client, env

    def _resolve(self, job: _Loaded, client: ArchiveClient) -> Resolution:
        raw = self.raw_inputs.get(job.command.name, set())
        return resolve(job.command, job.wrapper, job.params, client, job.project, raw)

    def _launch(self, job_id: int) -> None:
        """Resolve, stage and start one job, then leave it to the monitor."""
        job = self._load(job_id)
        if job is None or job_id in self._kill_requested:
            self._release_slot(job_id)
            return
        if not self._wait_turn(job):
            return
        client, env = self._client(job)
        try:
            try:
                resolution = self._resolve(job, client)
            except XnatMlError as exc:
                self._finish(job_id, jobs.FAILED, f"resolution failed: {exc}")
                return
            try:
                backend = self.backend(job.backend)
                backend_id, _mounts = start(
                    resolution, client, backend, job.job_dir, env, f"xnat-ml-{job_id}"
                )
            except XnatMlError as exc:
                self._finish(job_id, jobs.FAILED, str(exc))
                return
        finally:
            client.close()
        with self.sessions() as db:
            record = db.get(Job, job_id)
            if record is None:  # deleted with its project while it was staged
                backend.kill(backend_id)
                backend.cleanup(backend_id)
                shutil.rmtree(job.job_dir, ignore_errors=True)
                self._release_slot(job_id)
                return
            record.backend_job_id = backend_id
            record.host = job.host
            record.resolved = {
                "command-line": resolution.shown_command_line,
                "mounts": {m.name: m.container_path for m in resolution.mounts},
            }
            record.root_uri = resolution.root_uri or record.root_uri
            if not record.finished:  # a job killed while it was staged stays Killed
                record.set_status(jobs.RUNNING, f"started on {backend.name}")
            db.commit()
        self.fault_point("job-started")
        with self._lock:
            self._running[job_id] = _Running(job, resolution, backend, backend_id)
        if job_id in self._kill_requested:  # killed while it was being staged
            backend.kill(backend_id)

    def _wait_turn(self, job: _Loaded) -> bool:
        """True when the job may start now; else it waits in line, `Created`, and is submitted
        again when a job of its backend ends."""
        try:
            slots = self.slots(job.backend)
        except XnatMlError:
            return True  # the launch itself reports the backend's error
        if slots.take(job.job_id):
            return True
        with self.sessions() as db:
            record = db.get(Job, job.job_id)
            if record is not None and record.status == jobs.CREATED:
                record.history.append(jobs.JobEvent(
                    status=jobs.CREATED,
                    message=f"waiting: all {slots.limit} {job.backend} job slots are in use",
                ))  # fmt: skip
                db.commit()
        return False

    def _reattach(self, job_id: int) -> None:
        """A job an earlier server process started (Docker, Slurm): watch it again."""
        job = self._load(job_id)
        if job is None:
            return
        client, _env = self._client(job)
        backend = self.backend(job.backend)
        try:
            resolution = self._resolve(job, client)
        except XnatMlError as exc:  # its objects changed while the server was down
            backend.kill(job.backend_job_id)
            self._finish(job_id, jobs.FAILED, f"re-attach failed: {exc}")
            return
        finally:
            client.close()
        with self._lock:
            self._running[job_id] = _Running(job, resolution, backend, job.backend_job_id)

    def _watch(self) -> None:
        """The monitor: poll running jobs; hand each finished one to a worker for upload."""
        while not self._closing.wait(POLL_S):
            with self._lock:
                running = list(self._running.items())
            for job_id, entry in running:
                try:
                    state = entry.backend.state(entry.backend_id)
                except Exception:  # one backend's hiccup must not stop the monitor
                    log.exception("container %s: state query failed", job_id)
                    continue
                if not state.finished:
                    continue
                with self._lock:
                    self._running.pop(job_id, None)
                self.pool.submit(
                    self._guarded, lambda i, e=entry, s=state: self._done(e, s), job_id
                )

    def _done(self, entry: _Running, state: BackendState) -> None:
        job = entry.job
        if job.job_id in self._retired:
            self._release_slot(job.job_id)
            return
        if outcome_of(state).status == jobs.COMPLETE:
            self._finalizing(job.job_id)
        client, _env = self._client(job)
        try:
            outcome = complete(
                entry.resolution, client, entry.backend, entry.backend_id, job.job_dir, state,
                undo_created=self.undo_writes is None,
                uploaded_one=lambda _uri: self.fault_point("job-outputs.uploading"),
            )
        finally:
            client.close()
        self._finish(
            job.job_id, outcome.status, outcome.message, outcome.exit_code, outcome.uploaded
        )

    def _finalizing(self, job_id: int) -> None:
        """On record before the first upload: a restart then knows the outputs were going up
        (the backend has let go of the job) and requeues it rather than re-attach it."""
        with self.sessions() as db:
            record = db.get(Job, job_id)
            if record is not None and not record.finished:
                record.set_status(jobs.FINALIZING, "uploading outputs")
                db.commit()
        self.fault_point("job-outputs.finalizing")

    def _finish(
        self,
        job_id: int,
        status: str,
        message: str,
        exit_code: int | None = None,
        uploaded: list[str] | None = None,
    ) -> None:
        """Record the end of a job, however it ended, and release what it held: its mounts
        (staged inputs, outputs) first, so that a job seen ended holds none; its tokens; and keep
        what it wrote, or for any end but Complete undo it first, so that nobody sees a failed
        job's half results once it shows as failed. Its logs stay."""
        killed = job_id in self._kill_requested
        self._kill_requested.discard(job_id)
        with self.readers() as db:  # no write lock held while the files go
            work_dir = db.scalar(select(Job.work_dir).where(Job.id == job_id))
        if work_dir:
            shutil.rmtree(Path(work_dir) / "mounts", ignore_errors=True)
        if status != jobs.COMPLETE:
            self.revoke_tokens(job_id)  # first: nothing the job still sends lands after the undo
            self._settle_writes(job_id, status)
        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is not None and not job.finished:
                if killed and status != jobs.COMPLETE:
                    status, message = jobs.KILLED, message or "killed on request"
                if status == jobs.COMPLETE and job.workflow and job.workflow.step_description:
                    message = _stored(job.workflow.step_description, uploaded)
                job.set_status(status, message, exit_code)
                if uploaded:
                    job.outputs = uploaded
                db.commit()
                log.info("container %s: %s %s", job_id, status, message)
            final = job.status if job is not None else None
        self.revoke_tokens(job_id)  # also when it ended before: a token issued since then
        if final in jobs.FINAL_STATUSES:
            self._settle_writes(job_id, final)
        self._release_slot(job_id)

    def _settle_writes(self, job_id: int, status: str) -> None:
        """Keep (Complete) or undo (any other end) what the job wrote with its tokens. A
        failure here is logged: the server settles the job's writes again at its next start."""
        try:
            if status == jobs.COMPLETE:
                self.keep_writes(job_id)
            elif self.undo_writes is not None:
                self.undo_writes(job_id)
        except Exception:
            log.exception("container %s: its archive writes could not be settled", job_id)
