"""Subscription validation: XNAT's JSON shape accepted, broken and hostile documents refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xnat_ml.events import SubscriptionError, parse_subscription

REPO = Path(__file__).resolve().parents[2]
ACTION = "org.nrg.containers.services.CommandActionProvider:7"


def document(**changes) -> dict:
    base = {
        "name": "ROI to mask",
        "active": True,
        "event-filter": {
            "event-type": "org.nrg.xnat.eventservice.events.ImageAssessorEvent",
            "status": "CREATED",
            "project-ids": ["LIVER"],
            "payload-filter": "@.xsiType == 'icr:roiCollectionData'",
        },
        "action-key": ACTION,
        "attributes": {"labelmap": "region2MaskValueMap.txt"},
        "act-as-event-user": True,
    }
    return base | changes


def test_full_document_round_trips():
    sub = parse_subscription(document())
    assert sub.wrapper_id == 7
    assert sub.event_filter.project_ids == ("LIVER",)
    again = parse_subscription(sub.to_json())  # a GET answer can be PUT back as is
    assert again == sub


def test_defaults_and_normalisation():
    sub = parse_subscription(
        {
            "name": "  scans  ",
            "event-filter": {
                "event-type": "ScanEvent",
                "project-ids": ["", "P", "P"],
                "payload-filter": "$[?(@.scan-type == 'CT')]",
            },
            "action-key": "org.nrg.containers.services.CommandActionProvider:0012",
            "attributes": {"n": 3, "flag": False},
        }
    )
    assert sub.name == "scans"
    assert sub.active is True and sub.act_as_event_user is False
    assert sub.event_filter.event_type == "org.nrg.xnat.eventservice.events.ScanEvent"
    assert sub.event_filter.status is None
    assert sub.event_filter.project_ids == ("P",)
    assert sub.event_filter.payload_filter == "@.scan-type == 'CT'"
    assert sub.action_key.endswith(":12")
    assert sub.attributes == {"n": "3", "flag": "false"}


def test_update_keeps_fields_left_out():
    sub = parse_subscription(document())
    updated = parse_subscription({"active": False}, base=sub)
    assert updated.active is False
    assert updated.event_filter == sub.event_filter and updated.name == sub.name


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "(document)"),
        ("text", "(document)"),
        (None, "(document)"),
        (document(name=""), "name"),
        (document(name=None), "name"),
        (document(name=42), "name"),
        (document(name="x" * 300), "name"),
        (document(active="yes"), "active"),
        (document(**{"act-as-event-user": 1}), "act-as-event-user"),
        (document(**{"action-key": None}), "action-key"),
        (
            document(
                **{"action-key": "org.nrg.xnat.eventservice.actions.EventServiceLoggingAction:x"}
            ),
            "action-key",
        ),
        (
            document(**{"action-key": "org.nrg.containers.services.CommandActionProvider:abc"}),
            "action-key",
        ),
        (
            document(**{"action-key": "org.nrg.containers.services.CommandActionProvider:-1"}),
            "action-key",
        ),
        (
            document(**{"action-key": "org.nrg.containers.services.CommandActionProvider:٣"}),
            "action-key",
        ),
        (document(attributes=["a"]), "attributes"),
        (document(attributes={"a": {"nested": 1}}), "attributes.a"),
        (document(attributes={"a": None}), "attributes.a"),
        (document(attributes={"a": "x" * 20000}), "attributes.a"),
        (document(attributes={str(i): "v" for i in range(500)}), "attributes"),
        (document(**{"event-filter": None}), "event-filter"),
        (document(**{"event-filter": "ImageAssessorEvent"}), "event-filter"),
        (document(**{"event-filter": {}}), "event-filter.event-type"),
        (document(**{"event-filter": {"event-type": "org.nrg.Evil"}}), "event-filter.event-type"),
        (document(**{"event-filter": {"event-type": ["ScanEvent"]}}), "event-filter.event-type"),
        (
            document(**{"event-filter": {"event-type": "ScanEvent", "status": "UPDATED"}}),
            "event-filter.status",
        ),
        (
            document(**{"event-filter": {"event-type": "ScanEvent", "status": 1}}),
            "event-filter.status",
        ),
        (
            document(**{"event-filter": {"event-type": "ScanEvent", "project-ids": "P"}}),
            "event-filter.project-ids",
        ),
        (
            document(**{"event-filter": {"event-type": "ScanEvent", "project-ids": [1]}}),
            "event-filter.project-ids",
        ),
        (
            document(**{"event-filter": {"event-type": "ScanEvent", "payload-filter": "@.a =="}}),
            "event-filter.payload-filter",
        ),
        (
            document(**{"event-filter": {"event-type": "ScanEvent", "payload-filter": {"a": 1}}}),
            "event-filter.payload-filter",
        ),
        (document(**{"event-filter": {"event-type": "ScanEvent", "typo": 1}}), "event-filter.typo"),
        (
            document(**{"event-filter": {"event-type": "ScheduledEvent", "status": "CRON"}}),
            "event-filter.schedule",
        ),
        (document(action_key=ACTION), "action_key"),  # a typo is not silently ignored
    ],
)
def test_broken_documents_name_the_field(doc, field):
    with pytest.raises(SubscriptionError) as caught:
        parse_subscription(doc)
    assert caught.value.field == field
    message = str(caught.value)
    assert message.startswith(f"subscription field '{field}'")
    assert "\n" not in message and len(message) < 400


def test_hostile_json_is_refused_cleanly():
    deep = {"event-type": "ScanEvent"}
    for _ in range(50):
        deep = {"event-type": deep}
    with pytest.raises(SubscriptionError):
        parse_subscription(document(**{"event-filter": deep}))
    with pytest.raises(SubscriptionError):
        parse_subscription(json.loads('{"name": "\\u0000", "event-filter": 5}'))


def test_shipped_event_handlers_validate():
    files = sorted((REPO / "event_handlers").glob("*.json"))
    assert files, "event_handlers/ holds no subscription"
    for path in files:
        data = json.loads(path.read_text())
        # The shipped files name the wrapper by command/wrapper name; install fills in the id.
        data["action-key"] = ACTION
        data.pop("x-xnat-ml", None)
        parse_subscription(data)
