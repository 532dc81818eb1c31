"""Job records (XNAT's "containers"): what ran, where, as whom, and every status it passed through.

Stored in the server's SQLite database, on the store's one declarative base (`xnat_ml.store`, so
that `containers/` does not import the server). Users are kept by name: a job record outlives
accounts and is what an admin reads when something went wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from xnat_ml.containers.workflows import QUEUED, Workflow
from xnat_ml.store import Base, utcnow

CREATED = "Created"
RUNNING = "Running"
FINALIZING = "Finalizing"  # exited 0, its outputs being uploaded (XNAT's name for the step)
COMPLETE = "Complete"
FAILED = "Failed"
FAILED_UPLOAD = "Failed (Upload)"
KILLED = "Killed"
FINAL_STATUSES = (COMPLETE, FAILED, FAILED_UPLOAD, KILLED)
UNFINISHED = (CREATED, RUNNING, FINALIZING)


class Job(Base):
    __tablename__ = "cs_containers"
    # AUTOINCREMENT: an id is never handed out twice, also after a project's jobs are deleted
    __table_args__ = (Index("ix_cs_containers_status", "status"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    command_id: Mapped[int]
    wrapper_id: Mapped[int]
    command_name: Mapped[str] = mapped_column(String(255))
    wrapper_name: Mapped[str] = mapped_column(String(255))
    project: Mapped[str] = mapped_column(String(64), index=True)
    root_element: Mapped[str] = mapped_column(String(64), default="")
    root_uri: Mapped[str] = mapped_column(default="")
    username: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(default="")  # XNAT URL the job was started with
    backend: Mapped[str] = mapped_column(String(32), default="local")
    backend_job_id: Mapped[str | None] = mapped_column(String(255))
    bulk_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32), default=CREATED)
    status_time: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None]
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # launch values, to resolve again
    inputs: Mapped[dict] = mapped_column(JSON, default=dict)  # shown to users (sensitive masked)
    resolved: Mapped[dict] = mapped_column(JSON, default=dict)  # command line, mounts, outputs
    outputs: Mapped[list] = mapped_column(JSON, default=list)  # URIs uploaded
    work_dir: Mapped[str] = mapped_column(default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    workflow_id: Mapped[int | None] = mapped_column(
        ForeignKey("wrk_workflowdata.id", ondelete="SET NULL")
    )

    workflow: Mapped[Workflow | None] = relationship()

    history: Mapped[list[JobEvent]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobEvent.id"
    )

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def attempts(self) -> int:
        """How often the job was queued: once at launch, once more per requeue after a restart."""
        return sum(1 for event in self.history if event.status == CREATED)

    def set_status(self, status: str, message: str = "", exit_code: int | None = None) -> None:
        """Move to `status`, keeping the transition in the history."""
        now = utcnow()
        self.status = status
        self.status_time = now
        if message:
            self.message = message
        if exit_code is not None:
            self.exit_code = exit_code
        self.history.append(JobEvent(status=status, time=now, message=message, exit_code=exit_code))
        if self.workflow is not None:  # a requeued job waits again: Queued, as at its launch
            self.workflow.mirror(QUEUED if status == CREATED else status, message)

    def to_json(self) -> dict:
        """The container as XNAT's /xapi/containers describes it (the fields clients read)."""
        return {
            "id": self.id,
            "command-id": self.command_id,
            "wrapper-id": self.wrapper_id,
            "command-name": self.command_name,
            "wrapper-name": self.wrapper_name,
            "project": self.project,
            "user-id": self.username,
            "status": self.status,
            "status-time": _ms(self.status_time),
            "created": _ms(self.created),
            "message": self.message,
            "exit-code": None if self.exit_code is None else str(self.exit_code),
            "backend": self.backend,
            "container-id": self.backend_job_id,
            "bulk-launch-id": self.bulk_id,
            "workflow-id": None if self.workflow_id is None else str(self.workflow_id),
            "root-uri": self.root_uri,
            "inputs": [{"name": k, "value": v} for k, v in (self.inputs or {}).items()],
            "command-line": (self.resolved or {}).get("command-line"),
            "outputs": self.outputs or [],
            "history": [e.to_json() for e in self.history],
        }


class JobEvent(Base):
    __tablename__ = "cs_container_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("cs_containers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None]

    job: Mapped[Job] = relationship(back_populates="history")

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "time-recorded": _ms(self.time),
            "message": self.message,
            "exitCode": None if self.exit_code is None else str(self.exit_code),
        }


def _ms(when: datetime) -> int:
    """XNAT reports times as epoch milliseconds."""
    return int(when.replace(tzinfo=UTC).timestamp() * 1000)
