"""The Container Service's job runner as a Flask extension of the embedded server.

`container_service.init_app(app)` (from `create_app`) starts a `ContainerService` with the
app's settings (CONTAINER_BACKEND, CONTAINER_WORKERS, CONTAINER_BACKEND_OPTIONS,
CONTAINER_RAW_INPUTS, CONTAINER_MAX_ATTEMPTS; see config.py; jobs call the server at
`site.job_url`), requeues the jobs a crash ended,
and connects the receivers: a deleted project takes its jobs along, and jobs waiting from
before a restart start once the server takes requests. Blueprints reach the runner as
`container_service.get()`.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from xnat_ml.containers.backends.base import option_list
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.registry import WrapperSetting
from xnat_ml.containers.service import ContainerService
from xnat_ml.containers.workflows import Workflow
from xnat_ml.server import auth, site
from xnat_ml.server.extension import Extension
from xnat_ml.server.faults import fault_point
from xnat_ml.server.store import job_writes, signals
from xnat_ml.server.store.db import get_db, reader_factory, session_factory
from xnat_ml.server.store.models import User


class ContainerServiceExtension(Extension[ContainerService]):
    key = "xnat_ml.containers"

    def start(self, app: Flask) -> ContainerService:
        def token_for(username: str, job_id: int) -> tuple[str, str]:
            with app.app_context():
                user = get_db().scalar(select(User).where(User.username == username))
                if user is None or not user.enabled:
                    raise auth.Forbidden(f"user {username!r} no longer exists or is disabled")
                token, secret = auth.issue_token(user, job_id=job_id)
                return token.alias, secret

        def revoke_tokens(job_id: int) -> None:
            with app.app_context():
                auth.revoke_job_tokens(job_id)
                get_db().commit()

        service = ContainerService(
            session_factory(app),
            app.config["DATA_DIR"] / "containers",
            token_for,
            revoke_tokens,
            backend=app.config["CONTAINER_BACKEND"],
            workers=app.config["CONTAINER_WORKERS"],
            backend_options=_with_data_hidden(app),
            readers=reader_factory(app),
            raw_inputs=app.config["CONTAINER_RAW_INPUTS"],
            keep_writes=lambda job_id: job_writes.keep(app, job_id),
            undo_writes=lambda job_id: job_writes.undo(app, job_id),
            max_attempts=app.config["CONTAINER_MAX_ATTEMPTS"],
            fault_point=fault_point,
            job_url=lambda backend: site.job_url(app, lambda: service.backend(backend)),
        )
        signals.project_deleting.connect(_retire_project_jobs, sender=app)
        # Jobs waiting from before a restart resolve against the server: start them once it
        # listens.
        signals.server_ready.connect(lambda _app: service.resume_pending(), sender=app, weak=False)
        service.recover()  # jobs the last process left: requeued, or left to re-attach
        return service


container_service = ContainerServiceExtension()


def _with_data_hidden(app: Flask) -> dict[str, object]:
    """The backend options, with the server's data folder (its database among it) always in
    what the local backend hides from jobs (docs/backends.md, Local)."""
    options = dict(app.config["CONTAINER_BACKEND_OPTIONS"] or {})
    hidden = option_list(options.get("local_hide", ()))
    options["local_hide"] = [str(app.config["DATA_DIR"]), *hidden]
    return options


def _retire_project_jobs(app: Flask, *, project, db: Session, **_extra) -> Callable[[], None]:
    """`project_deleting`: the project's jobs (with their history and workflows) and wrapper
    switches go in
    the deleting transaction; once it commits, running jobs are stopped and their files
    (logs included) removed."""
    retired = [
        (row.id, row.backend, row.backend_job_id, row.work_dir)
        for row in db.execute(
            select(Job.id, Job.backend, Job.backend_job_id, Job.work_dir).where(
                Job.project == project.id
            )
        )
    ]
    auth.revoke_project_job_tokens(project.id)  # before the job rows that name the tokens go
    job_writes.forget(db, [job_id for job_id, *_rest in retired])  # their objects go too
    db.execute(delete(Job).where(Job.project == project.id))
    db.execute(delete(Workflow).where(Workflow.project == project.id))
    db.execute(delete(WrapperSetting).where(WrapperSetting.project == project.id))
    service = container_service.get(app)

    def after_commit() -> None:
        service.retire(retired)
        for job_id, *_rest in retired:
            job_writes.drop_kept(app, job_id)

    return after_commit
