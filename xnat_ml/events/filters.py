"""Does an event reach a subscription? Event type, status, project, then the payload filter.

XNAT stores the payload filter as a bare JSONPath *predicate*
(`@.xsiType == "icr:roiCollectionData"`) and evaluates `$[?(<predicate>)]` against the event
object serialised as JSON; the event passes when that selects something. We do the same with
jsonpath-ng, evaluating against a one-element list so the predicate applies to the object
itself, as Jayway does on an object root.

Jayway spells "some element equals" as `'DICOM' in @.resources[*].label`; jsonpath-ng has no
`in`, but its comparisons on a multi-valued path are already existential, so that form is
rewritten to `@.resources[*].label == 'DICOM'`. Other Jayway-only operators (`nin`, `size`,
`.length()`, `!`) are reported as unsupported when the subscription is validated.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext import parse

from xnat_ml.errors import XnatMlError

MAX_FILTER_LENGTH = 2000

_WRAPPED = re.compile(r"^\s*\$\s*\[\s*\?\s*\((?P<predicate>.*)\)\s*\]\s*$", re.DOTALL)
_LITERAL_IN_PATH = re.compile(r"""(?P<literal>'[^']*'|"[^"]*")\s+in\s+(?P<path>@[^\s&|()]*)""")


class FilterError(XnatMlError):
    """A payload filter that is not a JSONPath predicate we can evaluate."""


def normalise_predicate(text: str) -> str:
    """The bare predicate XNAT stores: `$[?(P)]` becomes `P`; surrounding blanks go."""
    match = _WRAPPED.match(text)
    return (match.group("predicate") if match else text).strip()


@lru_cache(maxsize=256)
def compile_predicate(predicate: str):
    """The jsonpath-ng expression `$[?(<predicate>)]`; raises FilterError naming the problem."""
    if len(predicate) > MAX_FILTER_LENGTH:
        raise FilterError(f"payload filter: longer than {MAX_FILTER_LENGTH} characters")
    rewritten = _LITERAL_IN_PATH.sub(r"\g<path> == \g<literal>", predicate)
    try:
        return parse(f"$[?({rewritten})]")
    except (JsonPathParserError, JsonPathLexerError, ValueError, TypeError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FilterError(
            f"payload filter {predicate!r}: not a JSONPath predicate ({detail})"
        ) from None
    except Exception as exc:  # jsonpath-ng raises bare Exception for some token errors
        raise FilterError(
            f"payload filter {predicate!r}: not a JSONPath predicate ({exc})"
        ) from None


def payload_passes(predicate: str | None, payload: dict[str, Any]) -> bool:
    """True when there is no filter or `$[?(predicate)]` selects the payload object.

    A comparison that fails at run time (a string compared with a number) is a mismatch, as
    with Jayway's SUPPRESS_EXCEPTIONS option in XNAT.
    """
    if not predicate:
        return True
    expression = compile_predicate(predicate)
    try:
        return bool(expression.find([payload]))
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
