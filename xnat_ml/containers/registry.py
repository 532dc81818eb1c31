"""Installed commands and their wrappers, with stable ids, and per-project enablement.

The command JSON is stored as installed (canonical form) and parsed again when needed, so what
`GET /xapi/commands/{id}` returns is what runs.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from xnat_ml.containers.command import Command, Wrapper, load_command
from xnat_ml.errors import XnatMlError
from xnat_ml.store import Base, utcnow


class CommandRecord(Base):
    __tablename__ = "cs_commands"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64), default="")
    image: Mapped[str] = mapped_column(String(255), default="")
    body: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)

    def command(self) -> Command:
        """The command with its own and its wrappers' ids filled in."""
        command = load_command(self.body, f"command {self.id}")
        command.id = self.id
        return command


class WrapperRecord(Base):
    __tablename__ = "cs_wrappers"
    __table_args__ = (UniqueConstraint("command_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    command_id: Mapped[int] = mapped_column(ForeignKey("cs_commands.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))


class WrapperSetting(Base):
    """A project's choice for one wrapper; absent means enabled (see docs/container-service.md)."""

    __tablename__ = "cs_wrapper_settings"
    __table_args__ = (UniqueConstraint("project", "wrapper_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    wrapper_id: Mapped[int] = mapped_column(ForeignKey("cs_wrappers.id", ondelete="CASCADE"))
    enabled: Mapped[bool] = mapped_column(default=True)


def install(db: Session, command: Command) -> CommandRecord:
    """Store a validated command; a second one with the same name and version is refused."""
    if db.scalar(
        select(CommandRecord.id).where(
            CommandRecord.name == command.name, CommandRecord.version == (command.version or "")
        )
    ):
        raise XnatMlError(
            f"command {command.name!r} version {command.version!r}: already installed"
        )
    body = command.to_dict()
    body.pop("id", None)
    for wrapper in body.get("xnat", []):
        wrapper.pop("id", None)
    record = CommandRecord(
        name=command.name,
        version=command.version or "",
        image=command.image or "",
        body=json.dumps(body),
    )
    db.add(record)
    db.flush()
    for wrapper in command.xnat:
        db.add(WrapperRecord(command_id=record.id, name=wrapper.name))
    db.flush()
    return record


def with_ids(db: Session, record: CommandRecord) -> Command:
    command = record.command()
    ids = dict(
        db.execute(
            select(WrapperRecord.name, WrapperRecord.id).where(
                WrapperRecord.command_id == record.id
            )
        ).all()
    )
    for wrapper in command.xnat:
        wrapper.id = ids.get(wrapper.name)
    return command


def find_wrapper(db: Session, wrapper: str | int) -> tuple[Command, Wrapper] | None:
    """The command and wrapper for a wrapper id (or a unique wrapper name)."""
    query = select(WrapperRecord)
    if str(wrapper).isdigit():
        query = query.where(WrapperRecord.id == int(wrapper))
    else:
        query = query.where(WrapperRecord.name == str(wrapper))
    rows = db.scalars(query).all()
    if len(rows) != 1:
        return None
    command = with_ids(db, db.get(CommandRecord, rows[0].command_id))
    return command, command.wrapper(rows[0].id)


SITE = ""  # the `project` of site-wide settings


def is_enabled(db: Session, project: str, wrapper_id: int) -> bool:
    """Enabled once switched on site-wide and in the project (SITE: the site-wide switch only).

    As in XNAT, a newly installed command's wrappers start disabled everywhere: an admin turns
    them on for the site, a project owner for the project.
    """
    settings = db.scalars(
        select(WrapperSetting).where(
            WrapperSetting.project.in_({SITE, project}), WrapperSetting.wrapper_id == wrapper_id
        )
    )
    switched = {s.project: s.enabled for s in settings}
    return all(switched.get(scope, False) for scope in {SITE, project})


def set_enabled(db: Session, project: str, wrapper_id: int, enabled: bool) -> None:
    setting = db.scalar(
        select(WrapperSetting).where(
            WrapperSetting.project == project, WrapperSetting.wrapper_id == wrapper_id
        )
    )
    if setting is None:
        db.add(WrapperSetting(project=project, wrapper_id=wrapper_id, enabled=enabled))
    else:
        setting.enabled = enabled
