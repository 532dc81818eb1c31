"""Event Service tables: subscriptions, the event outbox and the history of deliveries.

An event is written to the outbox (`EventRow`, state `pending`) in the transaction that makes the
change it reports, and marked `delivered` once every subscription it met has its delivery row, so
a server killed in between delivers it after the restart. A delivery that launched a job is
written in the launch's own transaction, and (event, subscription) is unique: one event never
launches one subscription's action twice. A delivery keeps a copy of its subscription's JSON, so
the history still reads after the subscription is edited or deleted (as XNAT's does).
Timestamps are naive UTC, like the rest of the embedded server's store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from xnat_ml.events import Event, EventFilter, Subscription, event_type
from xnat_ml.events.subscription import TIME_FORMAT
from xnat_ml.server.store.models import Base, utcnow


class SubscriptionRow(Base):
    __tablename__ = "event_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    action_key: Mapped[str] = mapped_column(String(255))
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    event_filter: Mapped[dict] = mapped_column(JSON)
    act_as_event_user: Mapped[bool] = mapped_column(default=False)
    owner: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(default=utcnow)

    def to_subscription(self) -> Subscription:
        f = self.event_filter
        return Subscription(
            id=self.id,
            name=self.name,
            active=self.active,
            action_key=self.action_key,
            attributes=dict(self.attributes or {}),
            event_filter=EventFilter(
                event_type=f["event-type"],
                status=f.get("status"),
                project_ids=tuple(f.get("project-ids") or ()),
                payload_filter=f.get("payload-filter"),
                schedule=f.get("schedule"),
            ),
            act_as_event_user=self.act_as_event_user,
            subscription_owner=self.owner,
            created=self.created.replace(tzinfo=UTC),
        )

    def update_from(self, sub: Subscription) -> None:
        self.name = sub.name
        self.active = sub.active
        self.action_key = sub.action_key
        self.attributes = dict(sub.attributes)
        self.event_filter = sub.event_filter.to_json()
        self.act_as_event_user = sub.act_as_event_user

    @property
    def project_ids(self) -> list[str]:
        return list(self.event_filter.get("project-ids") or [])


PENDING = "pending"
DELIVERED = "delivered"


class EventRow(Base):
    """The outbox: one event some active subscription wanted when the change committed."""

    __tablename__ = "event_outbox"
    # AUTOINCREMENT: deliveries name events by id, and a project's deletion removes its events
    __table_args__ = (Index("ix_event_outbox_state", "state"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    project: Mapped[str | None] = mapped_column(String(64), index=True)
    user: Mapped[str | None] = mapped_column(String(255))  # who caused it
    payload: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    delivered: Mapped[datetime | None]

    def to_event(self) -> Event:
        return Event(type=self.type, status=self.status, project=self.project,
                     payload=dict(self.payload), user=self.user)  # fmt: skip


class DeliveryRow(Base):
    """One subscription meeting one event: what was launched, as whom, and how it went."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        Index("ix_event_deliveries_project", "project"),
        UniqueConstraint("event_id", "subscription_id", name="uq_event_deliveries_event_sub"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int | None]  # the outbox row (kept as a number: events are purged with
    # their project, deliveries too; NULL for deliveries recorded before the outbox existed)
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("event_subscriptions.id", ondelete="SET NULL"), index=True
    )
    subscription: Mapped[dict] = mapped_column(JSON)  # the subscription's JSON at delivery time
    event_type: Mapped[str] = mapped_column(String(255))
    event_status: Mapped[str] = mapped_column(String(32))
    project: Mapped[str | None] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(255))  # the user the action ran as
    object_uri: Mapped[str | None] = mapped_column(String(1024))
    object_label: Mapped[str | None] = mapped_column(String(255))
    object_xsi_type: Mapped[str | None] = mapped_column(String(64))
    inputs: Mapped[dict] = mapped_column(JSON, default=dict)
    container_id: Mapped[str | None] = mapped_column(String(64))
    filter_mismatch: Mapped[bool] = mapped_column(default=False)
    error: Mapped[bool] = mapped_column(default=False)
    status_message: Mapped[str] = mapped_column(default="")
    statuses: Mapped[list] = mapped_column(JSON, default=list)  # [{status, timestamp, message}]
    timestamp: Mapped[datetime] = mapped_column(default=utcnow)

    def add_status(self, status: str, message: str) -> None:
        self.statuses = [
            *(self.statuses or []),
            {
                "status": status,
                "timestamp": _stamp(utcnow()),
                "message": message,
            },
        ]
        self.status_message = message

    def to_json(self) -> dict:
        """XNAT's `SubscriptionDelivery` JSON, plus `container-id` (what was launched)."""
        kind = event_type(self.event_type)
        return {
            "id": self.id,
            "event-type": self.event_type,
            "event": kind.to_json() if kind else None,
            "timestamp": _stamp(self.timestamp),
            "subscription": self.subscription,
            "user": self.user,
            "project": self.project or "",
            "inputs": ", ".join(f"{k}={v}" for k, v in (self.inputs or {}).items()),
            "trigger": {
                "event-name": kind.display_name if kind else self.event_type,
                "status": self.event_status,
                "is-xsi-type": True,
                "xnat-type": self.object_xsi_type,
                "URI": self.object_uri,
                "label": self.object_label,
            },
            "status": list(self.statuses or []),
            "status-message": self.status_message,
            "error": self.error,
            "container-id": self.container_id,
        }


def _stamp(moment: datetime) -> str:
    return moment.strftime(TIME_FORMAT)
