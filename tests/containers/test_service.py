"""The job runner's database use (no request waits for the write lock only to read, and no
transaction stays open across a backend call) and what it does at start with the jobs the last
server process left unfinished."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from flask import Flask

from xnat_ml.containers import jobs
from xnat_ml.containers.backends import BackendState, JobStatus
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.service import ContainerService
from xnat_ml.server.store import db as server_db


class FakeBackend:
    """Records calls; `during` runs inside each call (to probe the database from there)."""

    name = "fake"
    can_reattach = False

    def __init__(self, during=lambda: None) -> None:
        self.killed: list[str] = []
        self.stopped: list[str] = []
        self.during = during

    def kill(self, job_id: str) -> None:
        self.during()
        self.killed.append(job_id)

    def stop_orphan(self, job_id: str) -> bool:
        self.during()
        self.stopped.append(job_id)
        return True

    def cleanup(self, job_id: str) -> None:
        self.during()

    def state(self, job_id: str) -> BackendState:
        return BackendState(JobStatus.RUNNING)


@pytest.fixture
def service(tmp_path: Path):
    revoked: list[int] = []
    app = Flask(__name__)
    app.config["DATA_DIR"] = tmp_path
    server_db.database.init_app(app)
    runner = ContainerService(
        server_db.session_factory(app), tmp_path / "containers", lambda user, job: ("a", "s"),
        revoked.append,
        backend="fake", workers=1, readers=server_db.reader_factory(app),
    )  # fmt: skip
    runner.db_path = tmp_path / server_db.DB_FILENAME
    runner.revoked = revoked
    yield runner
    runner.shutdown()


class ReattachingBackend(FakeBackend):
    """Like Docker or Slurm: its jobs outlive the server."""

    name = "again"
    can_reattach = True
    stop_orphan = None  # it has no orphans: a job is stopped with kill()


def _job(service: ContainerService, status: str, backend_id: str | None = "fake-1",
         backend: str = "fake", work_dir: str = "", requeues: int = 0) -> int:  # fmt: skip
    with service.sessions() as db:
        job = Job(command_id=1, wrapper_id=1, command_name="c", wrapper_name="w", project="P",
                  username="u", backend=backend, backend_job_id=backend_id,
                  work_dir=work_dir)  # fmt: skip
        job.set_status(jobs.CREATED)
        for _ in range(requeues):
            job.set_status(jobs.RUNNING)
            job.set_status(jobs.CREATED, "requeued")
        if status != jobs.CREATED:
            job.set_status(status)
        db.add(job)
        db.commit()
        return job.id


def _status(service: ContainerService, job_id: int) -> str:
    with service.readers() as db:
        return db.get(Job, job_id).status


def test_kill_of_a_running_job_does_not_wait_for_a_busy_writer(service):
    """A writer holding the lock (a long upload's commit, a burst of launches) once made the
    kill's own BEGIN IMMEDIATE time out: "database is locked" and a 500."""
    backend = FakeBackend()
    service._backends["fake"] = backend
    job_id = _job(service, jobs.RUNNING)
    writer = sqlite3.connect(service.db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        answer: list[str] = []
        killer = threading.Thread(target=lambda: answer.append(service.kill(job_id)))
        killer.start()
        killer.join(timeout=5)
        assert answer == [jobs.KILLED], "kill queued behind the writer"
        assert backend.killed == ["fake-1"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        killer.join()


def _write_lock_is_free(path: Path) -> None:
    probe = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")  # "database is locked" if the caller holds it
        probe.execute("ROLLBACK")
    finally:
        probe.close()


def test_backend_calls_run_outside_any_transaction(service):
    backend = FakeBackend(during=lambda: _write_lock_is_free(service.db_path))
    service._backends["fake"] = backend
    running = _job(service, jobs.RUNNING, "fake-run")
    orphan = _job(service, jobs.RUNNING, "fake-orphan")
    service.kill(running)
    assert backend.killed == ["fake-run"]
    service.recover()
    assert "fake-orphan" in backend.stopped
    assert _status(service, orphan) == jobs.CREATED  # requeued
    assert orphan in service.revoked  # a job requeued by a restart loses its alias tokens


def test_kill_before_start_and_after_the_end(service):
    service._backends["fake"] = backend = FakeBackend()
    created = _job(service, jobs.CREATED, None)
    assert service.kill(created) == jobs.KILLED
    assert _status(service, created) == jobs.KILLED
    assert service.revoked == [created]
    done = _job(service, jobs.COMPLETE)
    assert service.kill(done) == jobs.COMPLETE
    assert backend.killed == []
    with pytest.raises(Exception, match="not found"):
        service.kill(999)


def test_retired_jobs_are_stopped_forgotten_and_their_files_removed(service, tmp_path):
    """What a project deletion asks once its records are gone: kill, no upload, no logs."""
    service._backends["fake"] = backend = FakeBackend()
    backend.cleaned = []
    backend.cleanup = backend.cleaned.append
    work = tmp_path / "containers" / "7"
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "stdout.log").write_text("XNAT_PASS=secret\n")
    service._running[7] = object()
    service.retire([(7, "fake", "fake-7", str(work)), (8, "fake", None, "")])
    assert backend.killed == ["fake-7"] and backend.cleaned == ["fake-7"]
    assert 7 not in service._running and not work.exists()
    assert {7, 8} <= service._retired


def _history(service: ContainerService, job_id: int) -> list[tuple[str, str]]:
    with service.readers() as db:
        return [(e.status, e.message) for e in db.get(Job, job_id).history]


def test_restart_requeues_the_jobs_the_stop_ended(service, tmp_path):
    """A local job left Running, or any job left Finalizing (outputs mid-upload), goes back to
    Created, same record, stopped, without its mounts, tokens or backend id; a job still
    running on a backend that re-attaches is left Running; a Created one stays Created."""
    service._backends["fake"] = local = FakeBackend()
    service._backends["again"] = ReattachingBackend()
    work = tmp_path / "containers" / "1"
    (work / "mounts" / "out").mkdir(parents=True)
    (work / "logs").mkdir()
    running = _job(service, jobs.RUNNING, "fake-run", work_dir=str(work))
    uploading = _job(service, jobs.FINALIZING, "again-up", backend="again")
    attached = _job(service, jobs.RUNNING, "again-run", backend="again")
    created = _job(service, jobs.CREATED, None)
    service.recover()
    assert local.stopped == ["fake-run"]
    assert not (work / "mounts").exists() and (work / "logs").exists()
    for job_id in (running, uploading):
        assert _history(service, job_id)[-1] == (
            jobs.CREATED, "requeued after a server restart (attempt 2 of 3)")  # fmt: skip
        with service.readers() as db:
            assert db.get(Job, job_id).backend_job_id is None
    assert service.backend("again").killed == ["again-up"]  # not the one it re-attaches
    assert _status(service, attached) == jobs.RUNNING
    assert _status(service, created) == jobs.CREATED
    assert sorted(service.revoked) == sorted([running, uploading, created])


def test_restart_gives_up_after_max_attempts(service):
    service._backends["fake"] = FakeBackend()
    worn = _job(service, jobs.RUNNING, "fake-worn", requeues=2)
    service.recover()
    assert _status(service, worn) == jobs.FAILED
    assert _history(service, worn)[-1] == (
        jobs.FAILED,
        "the server stopped while the job ran, in each of its 3 attempts; not requeued",
    )


def test_a_kill_asked_before_the_stop_ends_the_job_killed(service, tmp_path):
    """The kill request is on disk before the backend is told: a server that dies before the
    monitor records Killed ends the job Killed at restart, never requeues it."""
    service._backends["fake"] = FakeBackend()
    job_id = _job(service, jobs.RUNNING, "fake-k", work_dir=str(tmp_path / "containers" / "9"))
    assert service.kill(job_id) == jobs.KILLED
    service._kill_requested.clear()  # what a new server process knows of it
    service.recover()
    assert _status(service, job_id) == jobs.KILLED
    assert jobs.CREATED not in [status for status, _m in _history(service, job_id)[1:]]


def test_max_attempts_must_be_positive(tmp_path):
    app = Flask(__name__)
    app.config["DATA_DIR"] = tmp_path
    server_db.database.init_app(app)
    with pytest.raises(Exception, match="max attempts 0 must be 1 or more"):
        ContainerService(server_db.session_factory(app), tmp_path, lambda user, job: ("a", "s"),
                         lambda job: None, max_attempts=0)  # fmt: skip
