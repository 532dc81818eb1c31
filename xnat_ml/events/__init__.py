"""XNAT Event Service: subscriptions, event filters, and dispatch to the Container Service.

The embedded server raises events when archive objects are created; a subscription whose
filter matches launches its Container Service wrapper on the event's object.
"""

from xnat_ml.events.catalog import EVENT_TYPES, EventType, event_type, event_type_for
from xnat_ml.events.filters import Event, FilterError, Match, match, payload_passes
from xnat_ml.events.subscription import (
    COMMAND_ACTION_PROVIDER,
    EventFilter,
    Subscription,
    SubscriptionError,
    action_key_for,
    parse_subscription,
)

__all__ = [
    "COMMAND_ACTION_PROVIDER",
    "EVENT_TYPES",
    "Event",
    "EventFilter",
    "EventType",
    "FilterError",
    "Match",
    "Subscription",
    "SubscriptionError",
    "action_key_for",
    "event_type",
    "event_type_for",
    "match",
    "parse_subscription",
    "payload_passes",
]
