"""ORM tables of the embedded server: users and access, then XNAT's archive hierarchy.

Project → Subject → Experiment (session) → {Scan, Assessor}; any of them owns Resources. Objects
have XNAT's public identifiers (project ID, accession IDs such as XNAT_S00001) next to an integer
primary key; fields XNAT keeps per datatype that we do not model as columns live in `fields` (JSON).
Each archive object knows its folder under DIR/archive, named by stable IDs (never by labels), so
deleting an object removes exactly its folder.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Mapped, mapped_column, relationship

from xnat_ml.store import Base, utcnow

# XNAT's project roles, weakest first: Collaborator reads, Member also creates/edits, Owner also
# manages membership and deletes the project.
ROLES = ("Collaborator", "Member", "Owner")


JsonDict = MutableDict.as_mutable(JSON)


# ----------------------------------------------------------------------------- users and access


class User(Base):
    __tablename__ = "users"

    pk: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(255), default="")
    first_name: Mapped[str] = mapped_column(String(255), default="")
    last_name: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    verified: Mapped[bool] = mapped_column(default=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)

    roles: Mapped[list[ProjectRole]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class ProjectRole(Base):
    """A user's role in one project (Owner, Member or Collaborator)."""

    __tablename__ = "project_roles"
    __table_args__ = (UniqueConstraint("user_pk", "project_pk"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"))
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))

    user: Mapped[User] = relationship(back_populates="roles")
    project: Mapped[Project] = relationship(back_populates="roles")


class AliasToken(Base):
    """A short-lived alias/secret pair that stands in for a user's password (e.g. in containers).

    A token minted by a request that a token authenticated is that token's child: it expires no
    later and goes when its parent goes (the foreign key cascades). A job's tokens carry the job
    id, so that the job's end revokes them (a plain column: jobs live in their own metadata).
    """

    __tablename__ = "alias_tokens"

    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"))
    parent_alias: Mapped[str | None] = mapped_column(
        ForeignKey("alias_tokens.alias", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(index=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime]

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A login session, handed to clients as the JSESSIONID cookie.

    A session opened with an alias token (xnatpy logs in that way) belongs to the token: it ends
    when the token is revoked and never outlives the token's expiry.
    """

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"))
    token_alias: Mapped[str | None] = mapped_column(
        ForeignKey("alias_tokens.alias", ondelete="CASCADE"), index=True
    )
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime]

    user: Mapped[User] = relationship()
    token: Mapped[AliasToken | None] = relationship()


class Accession(Base):
    """Hands out accession numbers; AUTOINCREMENT never reuses one, even after deletions."""

    __tablename__ = "accessions"
    __table_args__ = {"sqlite_autoincrement": True}

    pk: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(4))


# ----------------------------------------------------------------------------- archive


class Project(Base):
    __tablename__ = "projects"

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    secondary_id: Mapped[str] = mapped_column(String(255), default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(default="")
    keywords: Mapped[str] = mapped_column(default="")
    pi_firstname: Mapped[str] = mapped_column(default="")
    pi_lastname: Mapped[str] = mapped_column(default="")
    accessibility: Mapped[str] = mapped_column(String(16), default="private")
    insert_user: Mapped[str] = mapped_column(default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # XNAT's last_modified: set on every change of the row
    last_modified: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    roles: Mapped[list[ProjectRole]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )
    subjects: Mapped[list[Subject]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )
    experiments: Mapped[list[Experiment]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )
    resources: Mapped[list[Resource]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )

    xsi_type = "xnat:projectData"
    kind = "project"

    @property
    def label(self) -> str:
        return self.id

    @property
    def project_obj(self) -> Project:
        return self

    @property
    def uri(self) -> str:
        return f"/data/projects/{self.id}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return PurePosixPath("archive", self.id)


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("project_pk", "label"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(255))
    fields: Mapped[dict] = mapped_column(JsonDict, default=dict)
    insert_user: Mapped[str] = mapped_column(default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_modified: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(back_populates="subjects")
    experiments: Mapped[list[Experiment]] = relationship(
        back_populates="subject", cascade="all, delete-orphan"
    )
    resources: Mapped[list[Resource]] = relationship(
        back_populates="subject", cascade="all, delete-orphan"
    )

    xsi_type = "xnat:subjectData"
    kind = "subject"

    @property
    def project_obj(self) -> Project:
        return self.project

    @property
    def uri(self) -> str:
        return f"/data/projects/{self.project.id}/subjects/{self.id}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return self.project.relative_dir / "subjects" / self.id


class Experiment(Base):
    """A subject assessor; in practice an image session (xnat:mrSessionData, ctSessionData, ...)."""

    __tablename__ = "experiments"
    __table_args__ = (
        UniqueConstraint("project_pk", "label"),
        Index("ix_experiments_project_type", "project_pk", "xsi_type"),
    )

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(255))
    xsi_type: Mapped[str] = mapped_column(String(64))
    date: Mapped[str] = mapped_column(String(10), default="")
    time: Mapped[str] = mapped_column(String(16), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    fields: Mapped[dict] = mapped_column(JsonDict, default=dict)
    insert_user: Mapped[str] = mapped_column(default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_modified: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(back_populates="experiments")
    subject: Mapped[Subject] = relationship(back_populates="experiments")
    scans: Mapped[list[Scan]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan"
    )
    assessors: Mapped[list[Assessor]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan"
    )
    reconstructions: Mapped[list[Reconstruction]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan"
    )
    resources: Mapped[list[Resource]] = relationship(
        back_populates="experiment", cascade="all, delete-orphan"
    )

    kind = "experiment"

    @property
    def project_obj(self) -> Project:
        return self.project

    @property
    def uri(self) -> str:
        return f"/data/experiments/{self.id}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return self.project.relative_dir / "experiments" / self.id


class Scan(Base):
    __tablename__ = "scans"
    __table_args__ = (UniqueConstraint("experiment_pk", "id"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    experiment_pk: Mapped[int] = mapped_column(ForeignKey("experiments.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(64))
    xsi_type: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(default="")
    series_description: Mapped[str] = mapped_column(default="")
    uid: Mapped[str] = mapped_column(String(64), default="")
    quality: Mapped[str] = mapped_column(String(32), default="usable")
    fields: Mapped[dict] = mapped_column(JsonDict, default=dict)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_modified: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="scans")
    resources: Mapped[list[Resource]] = relationship(
        back_populates="scan", cascade="all, delete-orphan"
    )

    kind = "scan"

    @property
    def label(self) -> str:
        return self.id

    @property
    def project_obj(self) -> Project:
        return self.experiment.project

    @property
    def uri(self) -> str:
        return f"{self.experiment.uri}/scans/{self.id}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return self.experiment.relative_dir / "scans" / self.id


class Assessor(Base):
    """An image assessor of a session, e.g. an OHIF ROI collection (icr:roiCollectionData)."""

    __tablename__ = "assessors"
    __table_args__ = (UniqueConstraint("project_pk", "label"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    experiment_pk: Mapped[int] = mapped_column(ForeignKey("experiments.pk", ondelete="CASCADE"))
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(255))
    xsi_type: Mapped[str] = mapped_column(String(64))
    date: Mapped[str] = mapped_column(String(10), default="")
    fields: Mapped[dict] = mapped_column(JsonDict, default=dict)
    insert_user: Mapped[str] = mapped_column(default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_modified: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="assessors")
    resources: Mapped[list[Resource]] = relationship(
        back_populates="assessor", cascade="all, delete-orphan"
    )

    kind = "assessor"

    @property
    def project_obj(self) -> Project:
        return self.experiment.project

    @property
    def uri(self) -> str:
        return f"{self.experiment.uri}/assessors/{self.id}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return self.experiment.relative_dir / "assessors" / self.id


class Reconstruction(Base):
    """An image reconstructed from a session's scans (xnat:reconstructedImageData): an ID, a
    type and the scan type it was built from; its files sit in resources."""

    __tablename__ = "reconstructions"
    __table_args__ = (UniqueConstraint("experiment_pk", "id"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    experiment_pk: Mapped[int] = mapped_column(ForeignKey("experiments.pk", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(default="")
    base_scan_type: Mapped[str] = mapped_column(default="")
    fields: Mapped[dict] = mapped_column(JsonDict, default=dict)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_modified: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="reconstructions")
    resources: Mapped[list[Resource]] = relationship(
        back_populates="reconstruction", cascade="all, delete-orphan"
    )

    xsi_type = "xnat:reconstructedImageData"
    kind = "reconstruction"

    @property
    def label(self) -> str:
        return self.id

    @property
    def project_obj(self) -> Project:
        return self.experiment.project

    @property
    def uri(self) -> str:
        return f"{self.experiment.uri}/reconstructions/{self.id}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return self.experiment.relative_dir / "reconstructions" / self.id


ArchiveObject = Project | Subject | Experiment | Scan | Assessor | Reconstruction


class Resource(Base):
    """A labelled folder of files owned by exactly one archive object (XNAT's resourceCatalog).

    `pk` is XNAT's `xnat_abstractresource_id`. Its files live in `relative_dir` (by pk, so odd
    labels never reach the file system).
    """

    __tablename__ = "resources"
    # AUTOINCREMENT: a deleted resource's number (and so its folder) is never handed out again.
    __table_args__ = {"sqlite_autoincrement": True}

    pk: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(default="")
    content: Mapped[str] = mapped_column(default="")
    tags: Mapped[str] = mapped_column(default="")
    description: Mapped[str] = mapped_column(default="")
    project_pk: Mapped[int | None] = mapped_column(
        ForeignKey("projects.pk", ondelete="CASCADE"), index=True
    )
    subject_pk: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.pk", ondelete="CASCADE"), index=True
    )
    experiment_pk: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.pk", ondelete="CASCADE"), index=True
    )
    scan_pk: Mapped[int | None] = mapped_column(
        ForeignKey("scans.pk", ondelete="CASCADE"), index=True
    )
    assessor_pk: Mapped[int | None] = mapped_column(
        ForeignKey("assessors.pk", ondelete="CASCADE"), index=True
    )
    reconstruction_pk: Mapped[int | None] = mapped_column(
        ForeignKey("reconstructions.pk", ondelete="CASCADE"), index=True
    )
    created: Mapped[datetime] = mapped_column(default=utcnow)

    project: Mapped[Project | None] = relationship(back_populates="resources")
    subject: Mapped[Subject | None] = relationship(back_populates="resources")
    experiment: Mapped[Experiment | None] = relationship(back_populates="resources")
    scan: Mapped[Scan | None] = relationship(back_populates="resources")
    assessor: Mapped[Assessor | None] = relationship(back_populates="resources")
    reconstruction: Mapped[Reconstruction | None] = relationship(back_populates="resources")

    xsi_type = "xnat:resourceCatalog"
    kind = "resource"

    @property
    def owner(self) -> ArchiveObject:
        return (self.project or self.subject or self.experiment or self.scan or self.assessor
                or self.reconstruction)  # fmt: skip

    @property
    def project_obj(self) -> Project:
        return self.owner.project_obj

    @property
    def uri(self) -> str:
        return f"{self.owner.uri}/resources/{self.label}"

    @property
    def relative_dir(self) -> PurePosixPath:
        return self.owner.relative_dir / "resources" / str(self.pk)

    @staticmethod
    def owner_key(owner: ArchiveObject) -> dict[str, int]:
        """The foreign-key column and value that attach a resource to `owner`."""
        return {f"{owner.kind}_pk": owner.pk}


class JournalEntry(Base):
    """One file move the archive owes once its catalogue commit is durable (journal.py):
    `publish` renames the staged `source` to `target`; `discard` removes `source`, a file or
    folder the commit dropped. Committed with the catalogue rows they serve, deleted when done;
    paths are relative to the data dir. Rows outlive a request only after a crash."""

    __tablename__ = "file_journal"

    pk: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(2048))
    target: Mapped[str] = mapped_column(String(2048))
    created: Mapped[datetime] = mapped_column(default=utcnow)
