"""The job runner behind the server's launch API: a worker pool, job records, restart recovery.

A launch request only checks inputs and writes a `Created` job; a worker thread then resolves it
against the archive over REST (as the launching user, through an alias token issued for the job),
stages, runs it on the configured backend and uploads. Workers talk to the server over HTTP like
any container would, so nothing here depends on being inside the server process.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from xnat_ml.containers import jobs
from xnat_ml.containers.archive import ArchiveClient
from xnat_ml.containers.backends import Backend, get_backend
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.launch import execute, finish
from xnat_ml.containers.registry import CommandRecord, with_ids
from xnat_ml.containers.resolve import resolve
from xnat_ml.errors import XnatMlError

log = logging.getLogger(__name__)

TokenFactory = Callable[[str], tuple[str, str]]  # username -> (alias, secret)


class ContainerService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        work_root: Path,
        token_factory: TokenFactory,
        backend: str = "local",
        workers: int = 4,
        backend_options: dict | None = None,
    ) -> None:
        self.sessions = sessions
        self.work_root = Path(work_root)
        self.token_factory = token_factory
        self.backend_name = backend
        self.backend_options = backend_options or {}
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self._kill_requested: set[int] = set()
        self._resumed = False
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xnat-ml-job")

    def backend(self, name: str | None = None) -> Backend:
        name = name or self.backend_name
        with self._lock:
            if name not in self._backends:
                self._backends[name] = get_backend(
                    name, self.work_root / "backends" / name, **self.backend_options
                )
            return self._backends[name]

    # ------------------------------------------------------------------ submission

    def submit(self, job_id: int) -> None:
        self.pool.submit(self._guarded, self._run, job_id)

    def kill(self, job_id: int) -> str:
        """Ask a job to stop; returns its status afterwards (Killed, or already final)."""
        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is None:
                raise XnatMlError(f"container {job_id}: not found")
            if job.finished:
                return job.status
            if job.status == jobs.CREATED:
                job.set_status(jobs.KILLED, "killed before it started")
                db.commit()
                return jobs.KILLED
            backend_name, backend_id = job.backend, job.backend_job_id
        self._kill_requested.add(job_id)
        if backend_id:
            self.backend(backend_name).kill(backend_id)
        return jobs.KILLED

    def fail_orphans(self) -> None:
        """At start: jobs left Running on a backend that cannot re-attach (local) are Failed."""
        with self.sessions() as db:
            for job in db.scalars(select(Job).where(Job.status == jobs.RUNNING)):
                backend = self._backend_or_none(job.backend)
                if backend is None or not backend.can_reattach or not job.backend_job_id:
                    stop_orphan = getattr(backend, "stop_orphan", None)
                    if stop_orphan is not None and job.backend_job_id:
                        stop_orphan(job.backend_job_id)
                    job.set_status(
                        jobs.FAILED,
                        f"server restarted while the job ran; a {job.backend} job cannot be "
                        "re-attached",
                    )
            db.commit()

    def resume_pending(self) -> None:
        """Once, when the server answers requests: re-queue Created jobs, re-attach Running ones."""
        with self._lock:
            if self._resumed:
                return
            self._resumed = True
        with self.sessions() as db:
            for job in db.scalars(select(Job).where(Job.status.in_([jobs.CREATED, jobs.RUNNING]))):
                if job.status == jobs.CREATED:
                    self.submit(job.id)
                else:
                    job.history.append(
                        jobs.JobEvent(status=jobs.RUNNING, message="re-attached after a restart")
                    )
                    self.pool.submit(self._guarded, self._resume, job.id)
            db.commit()

    def _backend_or_none(self, name: str) -> Backend | None:
        try:
            return self.backend(name)
        except XnatMlError as exc:
            log.warning("backend %s unavailable: %s", name, exc)
            return None

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ work

    def _guarded(self, work: Callable[[int], None], job_id: int) -> None:
        try:
            work(job_id)
        except Exception as exc:  # a worker must record every failure, never die silently
            log.exception("container %s failed", job_id)
            self._finish(job_id, jobs.FAILED, f"internal error: {type(exc).__name__}: {exc}")

    def _load(self, job_id: int):
        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is None or job.finished:
                return None
            record = db.get(CommandRecord, job.command_id)
            if record is None:
                return "missing"
            command = with_ids(db, record)
            snapshot = {
                "username": job.username,
                "host": job.host,
                "inputs": dict(job.params or {}),
                "backend": job.backend,
                "backend_job_id": job.backend_job_id,
                "work_dir": job.work_dir,
            }
        wrapper = command.wrapper(job.wrapper_id)
        return command, wrapper, snapshot

    def _client(self, snapshot: dict) -> tuple[ArchiveClient, dict[str, str]]:
        username = snapshot["username"]
        alias, secret = self.token_factory(username)
        client = ArchiveClient(
            snapshot["host"], alias, secret, renew=lambda: self.token_factory(username)
        )
        env = {"XNAT_HOST": snapshot["host"].rstrip("/"), "XNAT_USER": alias, "XNAT_PASS": secret}
        return client, env

    def _run(self, job_id: int) -> None:
        loaded = self._load(job_id)
        if loaded is None:
            return
        if loaded == "missing":
            self._finish(job_id, jobs.FAILED, "its command was deleted before it ran")
            return
        command, wrapper, snap = loaded
        job_dir = Path(snap["work_dir"])
        client, env = self._client(snap)
        try:
            try:
                resolution = resolve(command, wrapper, snap["inputs"], client)
            except XnatMlError as exc:
                self._finish(job_id, jobs.FAILED, f"resolution failed: {exc}")
                return
            backend = self.backend(snap["backend"])

            def started(backend_id: str) -> None:
                with self.sessions() as db:
                    job = db.get(Job, job_id)
                    job.backend_job_id = backend_id
                    job.resolved = {
                        "command-line": resolution.command_line,
                        "mounts": {m.name: m.container_path for m in resolution.mounts},
                    }
                    job.root_uri = resolution.root_uri or job.root_uri
                    job.set_status(jobs.RUNNING, f"started on {backend.name}")
                    db.commit()

            if job_id in self._kill_requested:
                self._finish(job_id, jobs.KILLED, "killed before it started")
                return
            try:
                outcome = execute(
                    resolution, client, backend, job_dir, env, f"xnat-ml-{job_id}",
                    on_started=started, stop=lambda: job_id in self._kill_requested,
                )  # fmt: skip
            except XnatMlError as exc:
                self._finish(job_id, jobs.FAILED, str(exc))
                return
            self._finish(
                job_id, outcome.status, outcome.message, outcome.exit_code, outcome.uploaded
            )
        finally:
            client.close()
            shutil.rmtree(job_dir / "mounts", ignore_errors=True)

    def _resume(self, job_id: int) -> None:
        loaded = self._load(job_id)
        if loaded is None or loaded == "missing":
            return
        command, wrapper, snap = loaded
        job_dir = Path(snap["work_dir"])
        client, _env = self._client(snap)
        try:
            resolution = resolve(command, wrapper, snap["inputs"], client)
            mounts = {m.name: job_dir / "mounts" / m.name for m in resolution.mounts}
            outcome = finish(
                resolution, client, self.backend(snap["backend"]), snap["backend_job_id"],
                job_dir, mounts, stop=lambda: job_id in self._kill_requested,
            )  # fmt: skip
            self._finish(
                job_id, outcome.status, outcome.message, outcome.exit_code, outcome.uploaded
            )
        finally:
            client.close()

    def _finish(
        self,
        job_id: int,
        status: str,
        message: str,
        exit_code: int | None = None,
        uploaded: list[str] | None = None,
    ) -> None:
        with self.sessions() as db:
            job = db.get(Job, job_id)
            if job is None:
                return
            if job_id in self._kill_requested and status != jobs.COMPLETE:
                status, message = jobs.KILLED, message or "killed on request"
            job.set_status(status, message, exit_code)
            if uploaded:
                job.outputs = uploaded
            db.commit()
        self._kill_requested.discard(job_id)
        log.info("container %s: %s %s", job_id, status, message)
