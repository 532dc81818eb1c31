"""The event types XNAT's Event Service knows, and which archive object raises which.

Names, statuses and XNAT types follow xnat-web's `org.nrg.xnat.eventservice.events` classes, so a
subscription written for a real XNAT validates here unchanged and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_PACKAGE = "org.nrg.xnat.eventservice.events."


@dataclass(frozen=True)
class EventType:
    """One event class: its full id (the `event-type` of a filter) and the statuses it carries."""

    name: str  # short class name, e.g. "ImageAssessorEvent"
    display_name: str
    description: str
    statuses: tuple[str, ...]
    xnat_type: str  # the XNAT data type of the payload object

    @property
    def id(self) -> str:
        return EVENT_PACKAGE + self.name

    def to_json(self) -> dict:
        """XNAT's `SimpleEvent` shape, as `GET /xapi/events/events` returns it."""
        return {
            "type": self.id,
            "statuses": list(self.statuses),
            "display-name": self.display_name,
            "description": self.description,
            "xnat-type": self.xnat_type,
            "is-xsi-type": self.name != "ScheduledEvent",
        }


_TYPES = (
    EventType(
        "ProjectEvent",
        "Project",
        "Project created or deleted.",
        ("CREATED", "DELETED"),
        "xnat:projectData",
    ),
    EventType(
        "SubjectEvent",
        "Subject",
        "Subject created or deleted.",
        ("CREATED", "DELETED"),
        "xnat:subjectData",
    ),
    EventType(
        "SessionEvent",
        "Session",
        "Session created, merged, or deleted.",
        ("CREATED", "MERGED", "DELETED"),
        "xnat:imageSessionData",
    ),
    EventType("ScanEvent", "Scan", "Scan created.", ("CREATED",), "xnat:imageScanData"),
    EventType(
        "ResourceEvent",
        "Resource",
        "Resource created or updated.",
        ("CREATED", "UPDATED"),
        "xnat:resourceCatalog",
    ),
    EventType(
        "ImageAssessorEvent",
        "Image Assessor",
        "Image assessor saved.",
        ("CREATED", "UPDATED"),
        "xnat:imageAssessorData",
    ),
    EventType(
        "SubjectAssessorEvent",
        "Subject Assessor",
        "Subject assessor created or deleted.",
        ("CREATED", "DELETED"),
        "xnat:subjectAssessorData",
    ),
    EventType(
        "ProjectAssetEvent",
        "Project Asset",
        "Project asset created.",
        ("CREATED",),
        "xnat:abstractProjectAsset",
    ),
    EventType(
        "ScheduledEvent",
        "Scheduled Event",
        "Event triggered on a cron schedule.",
        ("CRON",),
        "Scheduled Event",
    ),
)

EVENT_TYPES: dict[str, EventType] = {t.id: t for t in _TYPES}


def event_type(name: str) -> EventType | None:
    """The event type for a full class name, or for its short name ("ScanEvent")."""
    return EVENT_TYPES.get(name) or EVENT_TYPES.get(EVENT_PACKAGE + name)


def event_type_for(kind: str, xsi_type: str | None) -> EventType | None:
    """Which event an archive object's creation raises (`kind` as the server's signal names it).

    Image sessions raise SessionEvent, other subject assessors SubjectAssessorEvent; assessors
    of a session (ROI collections among them) raise ImageAssessorEvent.
    """
    kind = kind.lower()
    if kind in ("session", "experiment", "subject_assessor"):
        is_image_session = (xsi_type or "").lower().endswith("sessiondata")
        return event_type("SessionEvent" if is_image_session else "SubjectAssessorEvent")
    name = {
        "project": "ProjectEvent",
        "subject": "SubjectEvent",
        "scan": "ScanEvent",
        "resource": "ResourceEvent",
        "assessor": "ImageAssessorEvent",
        "image_assessor": "ImageAssessorEvent",
        "project_asset": "ProjectAssetEvent",
    }.get(kind)
    return event_type(name) if name else None
