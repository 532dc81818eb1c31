"""Does an event reach a subscription? Event type, status, project, then the payload filter.

XNAT stores the payload filter as a bare Jayway JsonPath *predicate*
(`@.xsiType == "icr:roiCollectionData"`) and evaluates `$[?(<predicate>)]` against the event
object serialised as JSON; the event passes when that selects the object. The Container
Service's matchers are the same kind of predicate, so both go through
`xnat_ml.containers.matcher`, which keeps Jayway's semantics (`in`, `=~`, `&&`, `||`, `!`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from xnat_ml.containers.matcher import MatcherError, compile_matcher
from xnat_ml.errors import XnatMlError

_WRAPPED = re.compile(r"^\s*\$\s*\[\s*\?\s*\((?P<predicate>.*)\)\s*\]\s*$", re.DOTALL)


class FilterError(XnatMlError):
    """A payload filter that is not a JSONPath predicate we can evaluate."""


def normalise_predicate(text: str) -> str:
    """The bare predicate XNAT stores: `$[?(P)]` becomes `P`; surrounding blanks go."""
    match = _WRAPPED.match(text)
    return (match.group("predicate") if match else text).strip()


def compile_predicate(predicate: str):
    """`payload -> bool` for a predicate; raises FilterError naming the problem."""
    try:
        return compile_matcher(predicate)
    except (MatcherError, RecursionError) as exc:
        raise FilterError(
            f"payload filter {predicate[:200]!r}: not a JSONPath predicate ({exc})"
        ) from None


def payload_passes(predicate: str | None, payload: dict[str, Any]) -> bool:
    """True when there is no filter or the predicate holds for the payload object.

    A comparison that fails at run time is a mismatch, as with Jayway's SUPPRESS_EXCEPTIONS
    option in XNAT.
    """
    if not predicate:
        return True
    test = compile_predicate(predicate)
    try:
        return bool(test(payload))
    except Exception:  # noqa: BLE001 - any evaluation fault means "does not match"
        return False


@dataclass(frozen=True)
class Event:
    """One event as the Event Service sees it: what happened, where, to what, by whom."""

    type: str  # full event-type id
    status: str  # CREATED, UPDATED, ...
    project: str | None
    payload: dict[str, Any] = field(default_factory=dict)  # the object in XNAT's model shape
    user: str | None = None  # who caused it


class Match(enum.Enum):
    """How far an event got through a subscription's filter."""

    NOT_SELECTED = "not selected"  # other event type, status or project: not recorded
    FILTER_MISMATCH = "filter mismatch"  # selected, but the payload filter said no
    MATCHED = "matched"


def match(event_filter: dict[str, Any], event: Event) -> Match:
    """Judge `event` against an `event-filter` (XNAT JSON shape, already validated)."""
    if event_filter.get("event-type") != event.type:
        return Match.NOT_SELECTED
    status = event_filter.get("status")
    if status and status != event.status:
        return Match.NOT_SELECTED
    projects = [p for p in event_filter.get("project-ids") or [] if p]
    if projects and event.project not in projects:
        return Match.NOT_SELECTED
    if not payload_passes(event_filter.get("payload-filter"), event.payload):
        return Match.FILTER_MISMATCH
    return Match.MATCHED
