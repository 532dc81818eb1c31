"""From an event to Container Service launches: which subscriptions fire, as whom, with what.

This follows XNAT's `CommandActionProvider`: the event's object becomes the wrapper's root
(first external) input, the subscription's attributes fill the other inputs, the launch runs in
the subscription's single project (else the event's), as the user who caused the event when
`act-as-event-user` is set on a site-wide subscription, otherwise as the subscription's owner
(a subscription naming projects never runs as the event's user, even if stored so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from xnat_ml.containers.batch import archive_uri
from xnat_ml.errors import XnatMlError
from xnat_ml.events.filters import Event, Match, match
from xnat_ml.events.subscription import Subscription

log = logging.getLogger(__name__)

#: launch(project, wrapper_id, object_uri, attributes, username) -> container id.
#: Raises XnatMlError (or anything else) when the launch is refused, Postponed when it could
#: not be made now (nothing done: it is asked again later).
Launcher = Callable[[str | None, int, str, dict[str, str], str], str]


class Postponed(Exception):
    """The launch could not be made now (the server's store busy): the event stays pending
    and is delivered again later, rather than recorded as a failed action."""


@dataclass
class Delivery:
    """One subscription meeting one event."""

    subscription: Subscription
    match: Match
    user: str | None  # who the action runs as
    project: str | None
    inputs: dict[str, str] = field(default_factory=dict)
    container_id: str | None = None
    error: str | None = None


def plan(subscriptions: Iterable[Subscription], event: Event) -> list[Delivery]:
    """The deliveries an event causes: matched ones and payload-filter mismatches (for history)."""
    planned = []
    for sub in subscriptions:
        if not sub.active:
            continue
        result = match(sub.event_filter.to_json(), event)
        if result is Match.NOT_SELECTED:
            continue
        projects = sub.event_filter.project_ids
        as_event_user = sub.act_as_event_user and not projects
        planned.append(
            Delivery(
                subscription=sub,
                match=result,
                user=event.user if as_event_user else sub.subscription_owner,
                project=projects[0] if len(projects) == 1 else event.project,
                inputs=dict(sub.attributes),
            )
        )
    return planned


def deliver(delivery: Delivery, event: Event, launch: Launcher) -> Delivery:
    """Launch a matched delivery's wrapper on the event's object; record the container or error."""
    if delivery.match is not Match.MATCHED:
        return delivery
    uri = event.payload.get("uri")
    if not uri:
        delivery.error = f"event {event.type} carries no object uri to launch on"
        return delivery
    if not delivery.user:
        delivery.error = "no user to run the action as"
        return delivery
    try:
        delivery.container_id = launch(
            delivery.project,
            delivery.subscription.wrapper_id,
            archive_uri(uri),
            dict(delivery.inputs),
            delivery.user,
        )
    except Postponed:
        raise
    except XnatMlError as exc:
        delivery.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a failed launch is history, not a crash
        log.exception("launch for subscription %s failed", delivery.subscription.id)
        delivery.error = f"{type(exc).__name__}: {exc}"
    return delivery
