"""Subjects and experiments shared into other projects, as XNAT shares them.

A share makes an object of one project (its owner) appear in another under its own label (or
the object's): listed there, found by that project's paths, and readable by that project's
readers. It stays the owner's object: writing or deleting it through the sharing project needs
the owner's role (`walk` checks), and the share goes with the object or the project it is in.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from xnat_ml.server.store.models import Base, Experiment, Project, Subject


class Share(Base):
    __tablename__ = "shares"
    __table_args__ = (
        UniqueConstraint("project_pk", "subject_pk"),
        UniqueConstraint("project_pk", "experiment_pk"),
    )

    pk: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    subject_pk: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.pk", ondelete="CASCADE"), index=True
    )
    experiment_pk: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.pk", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(255))


def _key(model) -> ColumnElement:
    return Share.subject_pk if model is Subject else Share.experiment_pk


def shared_into(db: Session, project: Project, model, name: str):
    """The subject or experiment shared into `project` under label `name` (or by its ID)."""
    return db.scalar(
        select(model)
        .join(Share, _key(model) == model.pk)
        .where(Share.project_pk == project.pk, or_(Share.label == name, model.id == name))
    )


def share_of(db: Session, project: Project, obj: Subject | Experiment) -> Share | None:
    return db.scalar(
        select(Share).where(Share.project_pk == project.pk, _key(type(obj)) == obj.pk)
    )


def labels_in(db: Session, project: Project, model) -> dict[int, str]:
    """{pk: label} of the subjects (experiments) shared into `project`."""
    key = _key(model)
    shared = select(key, Share.label).where(Share.project_pk == project.pk, key.is_not(None))
    return dict(db.execute(shared).all())


def label_taken(db: Session, project: Project, model, label: str) -> bool:
    """Whether `label` names a subject (experiment) of `project`, its own or shared into it."""
    own = db.scalar(select(model.pk).where(model.project_pk == project.pk, model.label == label))
    shared = db.scalar(
        select(Share.pk).where(
            Share.project_pk == project.pk, _key(model).is_not(None), Share.label == label
        )
    )
    return own is not None or shared is not None


def sharing_projects(db: Session, obj: Subject | Experiment) -> list[Project]:
    return list(
        db.scalars(
            select(Project)
            .join(Share, Share.project_pk == Project.pk)
            .where(_key(type(obj)) == obj.pk)
            .order_by(Share.pk)
        )
    )


def in_projects(model, project_pks) -> ColumnElement:
    """WHERE clause: the subject or experiment belongs to, or is shared into, one of the
    projects (`project_pks`: a list or a subquery of project primary keys)."""
    shared = select(_key(model)).where(Share.project_pk.in_(project_pks))
    return or_(model.project_pk.in_(project_pks), model.pk.in_(shared))
