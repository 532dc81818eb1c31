"""The prearchive: DICOM uploads held back from the archive until someone archives them.

`POST /data/services/import?dest=/prearchive/projects/P` keeps the upload as it came (one file
in DATA/prearchive/, outside the archive tree and its catalogue) with what its headers say
(subject, session label, scan date); `/data/services/archive` imports it into the archive later,
and delete throws it away. Each entry is XNAT's (project, timestamp, folderName) triple.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from xnat_ml.server.store.models import Base, Project, utcnow

FOLDER = "prearchive"  # below the data dir


class PrearchiveSession(Base):
    __tablename__ = "prearchive_sessions"
    __table_args__ = (UniqueConstraint("project_pk", "timestamp", "folder_name"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk", ondelete="CASCADE"))
    timestamp: Mapped[str] = mapped_column(String(32))
    folder_name: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255), default="")
    scan_date: Mapped[str] = mapped_column(String(10), default="")
    scan_time: Mapped[str] = mapped_column(String(16), default="")
    uploader: Mapped[str] = mapped_column(String(255), default="")
    uploaded: Mapped[datetime] = mapped_column(default=utcnow)

    project: Mapped[Project] = relationship()

    @property
    def url(self) -> str:
        return f"/prearchive/projects/{self.project.id}/{self.timestamp}/{self.folder_name}"

    @property
    def relative_file(self) -> PurePosixPath:
        return PurePosixPath(FOLDER, f"{self.pk}.upload")

    def row(self) -> dict[str, str]:
        """The listing row XNAT gives (xnatpy's PrearchiveSession reads these keys)."""
        stamp = self.uploaded.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return {
            "project": self.project.id, "timestamp": self.timestamp, "lastmod": stamp,
            "uploaded": stamp, "scan_date": self.scan_date, "scan_time": self.scan_time,
            "subject": self.subject, "folderName": self.folder_name, "name": self.folder_name,
            "tag": "", "status": "READY", "url": self.url, "autoarchive": "Manual",
            "prevent_anon": "false", "prevent_auto_commit": "false", "TIMEZONE": "UTC",
        }  # fmt: skip
