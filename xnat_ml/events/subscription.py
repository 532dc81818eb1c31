"""Event Service subscriptions in XNAT's JSON shape, and the validator that reads them.

A subscription says: when an event of this type and status happens in these projects and its
object passes the payload filter, run this action (a Container Service wrapper) with these
attributes (input values), as the user who caused the event or as the subscription's owner.

`parse_subscription` accepts exactly what XNAT's REST API accepts (plus the read-only fields
XNAT returns, so a GET can be PUT back) and rejects everything else with a one-line message
naming the field, e.g. `subscription field 'event-filter.status': 'DONE' is not a status of
ImageAssessorEvent (CREATED, UPDATED)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.events.catalog import EVENT_TYPES, event_type
from xnat_ml.events.filters import FilterError, compile_predicate, normalise_predicate

COMMAND_ACTION_PROVIDER = "org.nrg.containers.services.CommandActionProvider"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"  # XNAT's "yyyy-MM-dd HH:mm:ss z" in UTC

MAX_NAME = 255
MAX_ATTRIBUTES = 200
MAX_ATTRIBUTE_VALUE = 10_000
MAX_PROJECTS = 1000

# Fields XNAT returns on GET; accepted (and ignored) on input so a fetched subscription round-trips.
_READ_ONLY = {
    "id",
    "subscription-owner",
    "valid",
    "validation-message",
    "created",
    "editable",
    "registration-key",
    "custom-listener-id",
    "use-counter",
    "event-selector",
    "project-id",
}
_FIELDS = {"name", "active", "action-key", "attributes", "event-filter", "act-as-event-user"}
_FILTER_FIELDS = {"event-type", "status", "project-ids", "payload-filter", "schedule"}
_FILTER_READ_ONLY = {"id", "name", "filter-nodes", "reactorCriteriaHash"}


class SubscriptionError(XnatMlError):
    """A subscription document that XNAT's Event Service would not accept."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"subscription field '{field_name}': {problem}")
        self.field = field_name


@dataclass(frozen=True)
class EventFilter:
    event_type: str  # full class name
    status: str | None = None  # None = every status of the type
    project_ids: tuple[str, ...] = ()  # empty = every project (site-wide)
    payload_filter: str | None = None  # bare JSONPath predicate
    schedule: str | None = None  # cron expression, ScheduledEvent only

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "event-type": self.event_type,
            "project-ids": list(self.project_ids),
            "status": self.status,
        }
        if self.payload_filter:
            data["payload-filter"] = self.payload_filter
        if self.schedule:
            data["schedule"] = self.schedule
        return data


@dataclass(frozen=True)
class Subscription:
    name: str
    event_filter: EventFilter
    action_key: str
    attributes: dict[str, str] = field(default_factory=dict)
    active: bool = True
    act_as_event_user: bool = False
    id: int | None = None
    subscription_owner: str | None = None
    created: datetime | None = None

    @property
    def wrapper_id(self) -> int:
        """The Container Service wrapper the action key names."""
        return int(self.action_key.rsplit(":", 1)[1])

    def to_json(self) -> dict[str, Any]:
        """XNAT's `Subscription` JSON (what GET /xapi/events/subscription/{id} returns)."""
        return {
            "id": self.id,
            "name": self.name,
            "active": self.active,
            "action-key": self.action_key,
            "attributes": dict(self.attributes),
            "event-filter": self.event_filter.to_json(),
            "act-as-event-user": self.act_as_event_user,
            "subscription-owner": self.subscription_owner,
            "valid": True,
            "validation-message": "",
            "created": self.created.astimezone(UTC).strftime(TIME_FORMAT) if self.created else None,
        }


def action_key_for(wrapper_id: int) -> str:
    return f"{COMMAND_ACTION_PROVIDER}:{wrapper_id}"


def parse_subscription(data: Any, *, base: Subscription | None = None) -> Subscription:
    """Validate a subscription document; with `base`, fields left out keep base's values (PUT).

    Raises SubscriptionError naming the first offending field.
    """
    if not isinstance(data, dict):
        raise SubscriptionError("(document)", f"expected a JSON object, got {_kind(data)}")
    _reject_unknown(data, _FIELDS | _READ_ONLY, "")

    name = _optional(data, "name", str, base.name if base else None)
    if name is None or not name.strip():
        raise SubscriptionError("name", "required, a non-empty string")
    if len(name) > MAX_NAME:
        raise SubscriptionError("name", f"longer than {MAX_NAME} characters")

    active = _optional(data, "active", bool, base.active if base else True)
    act_as = _optional(data, "act-as-event-user", bool, base.act_as_event_user if base else False)
    action_key = _parse_action_key(
        _optional(data, "action-key", str, base.action_key if base else None)
    )
    attributes = (
        _parse_attributes(data["attributes"])
        if data.get("attributes") is not None
        else (dict(base.attributes) if base else {})
    )
    if "event-filter" in data and data["event-filter"] is not None:
        event_filter = _parse_filter(data["event-filter"])
    elif base:
        event_filter = base.event_filter
    else:
        raise SubscriptionError("event-filter", "required, an object with at least 'event-type'")

    return Subscription(
        name=name.strip(),
        event_filter=event_filter,
        action_key=action_key,
        attributes=attributes,
        active=active,
        act_as_event_user=act_as,
        id=base.id if base else None,
        subscription_owner=base.subscription_owner if base else None,
        created=base.created if base else None,
    )


def _parse_filter(data: Any) -> EventFilter:
    if not isinstance(data, dict):
        raise SubscriptionError("event-filter", f"expected an object, got {_kind(data)}")
    _reject_unknown(data, _FILTER_FIELDS | _FILTER_READ_ONLY, "event-filter.")

    type_name = data.get("event-type")
    if not isinstance(type_name, str) or not type_name:
        raise SubscriptionError(
            "event-filter.event-type",
            "required, e.g. 'org.nrg.xnat.eventservice.events.ImageAssessorEvent'",
        )
    kind = event_type(type_name)
    if kind is None:
        known = ", ".join(t.name for t in EVENT_TYPES.values())
        raise SubscriptionError(
            "event-filter.event-type", f"unknown event type {type_name[:100]!r} (known: {known})"
        )

    status = data.get("status")
    if status is not None:
        if not isinstance(status, str):
            raise SubscriptionError(
                "event-filter.status", f"expected a string, got {_kind(status)}"
            )
        if status not in kind.statuses:
            raise SubscriptionError(
                "event-filter.status",
                f"{status[:50]!r} is not a status of {kind.name} ({', '.join(kind.statuses)})",
            )

    projects = data.get("project-ids")
    if projects is None:
        projects = []
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise SubscriptionError(
            "event-filter.project-ids", "expected a list of project ids (strings)"
        )
    if len(projects) > MAX_PROJECTS:
        raise SubscriptionError("event-filter.project-ids", f"more than {MAX_PROJECTS} projects")
    projects = [p.strip() for p in projects if p.strip()]

    predicate = data.get("payload-filter")
    if predicate is not None:
        if not isinstance(predicate, str):
            raise SubscriptionError(
                "event-filter.payload-filter", f"expected a string, got {_kind(predicate)}"
            )
        predicate = normalise_predicate(predicate) or None
        if predicate:
            try:
                compile_predicate(predicate)
            except FilterError as exc:
                raise SubscriptionError("event-filter.payload-filter", str(exc)) from None

    schedule = data.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        raise SubscriptionError(
            "event-filter.schedule", f"expected a string, got {_kind(schedule)}"
        )
    if kind.name == "ScheduledEvent" and not schedule:
        raise SubscriptionError(
            "event-filter.schedule", "required for ScheduledEvent (a cron expression)"
        )

    return EventFilter(
        event_type=kind.id,
        status=status,
        project_ids=tuple(dict.fromkeys(projects)),
        payload_filter=predicate,
        schedule=schedule or None,
    )


def _parse_action_key(key: str | None) -> str:
    if not key:
        raise SubscriptionError("action-key", f"required, '{COMMAND_ACTION_PROVIDER}:<wrapper id>'")
    provider, sep, action = key.rpartition(":")
    if not sep or provider != COMMAND_ACTION_PROVIDER:
        raise SubscriptionError(
            "action-key",
            f"{key[:120]!r} does not name the Container Service "
            f"('{COMMAND_ACTION_PROVIDER}:<wrapper id>')",
        )
    if not action.isascii() or not action.isdigit() or int(action) <= 0:
        raise SubscriptionError(
            "action-key", f"the wrapper id {action[:40]!r} is not a positive integer"
        )
    return f"{provider}:{int(action)}"


def _parse_attributes(data: Any) -> dict[str, str]:
    if not isinstance(data, dict):
        raise SubscriptionError(
            "attributes", f"expected an object of input values, got {_kind(data)}"
        )
    if len(data) > MAX_ATTRIBUTES:
        raise SubscriptionError("attributes", f"more than {MAX_ATTRIBUTES} entries")
    values: dict[str, str] = {}
    for key, value in data.items():
        if not key:
            raise SubscriptionError("attributes", "an input name is empty")
        # XNAT reads attributes as Map<String, String>; Jackson coerces scalars to text.
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        elif not isinstance(value, str):
            raise SubscriptionError(
                f"attributes.{key[:60]}",
                f"expected a string, number or boolean, got {_kind(value)}",
            )
        if len(value) > MAX_ATTRIBUTE_VALUE:
            raise SubscriptionError(
                f"attributes.{key[:60]}", f"longer than {MAX_ATTRIBUTE_VALUE} characters"
            )
        values[key] = value
    return values


def _optional(data: dict, key: str, kind: type, default: Any) -> Any:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise SubscriptionError(key, f"expected a {kind.__name__}, got {_kind(value)}")
    return value


def _reject_unknown(data: dict, allowed: set[str], prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise SubscriptionError(
            f"{prefix}{unknown[0][:60]}",
            "unknown field (allowed: "
            f"{', '.join(sorted(allowed - _READ_ONLY - _FILTER_READ_ONLY))})",
        )


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
