"""Saved searches (`/data/search/saved/{id}`): a user's search documents, kept as sent.

A saved search belongs to the user who first stored it; only they (or a site admin) replace
or delete it. It is visible to them and to the logins its document lists as `allowed_user`s.
Running one always applies the runner's own project access, so sharing a search shares its
question, never rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from xnat_ml.server.store.models import Base, User, utcnow


class SavedSearch(Base):
    __tablename__ = "saved_searches"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"), index=True)
    brief_description: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    root_element: Mapped[str] = mapped_column(String(64))
    allowed_users: Mapped[list] = mapped_column(JSON, default=list)
    document: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship()

    def visible_to(self, user: User) -> bool:
        return user.is_admin or self.owner_pk == user.pk or user.username in self.allowed_users
