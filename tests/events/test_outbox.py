"""The Event Service's outbox and delivery records, in process (Flask test client): an event is
stored exactly when the change that raised it commits, and a launch records its delivery in the
job's transaction, once per (event, subscription); launches happen in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from xnat_ml.errors import XnatMlError
from xnat_ml.events.dispatch import Postponed
from xnat_ml.server import event_worker
from xnat_ml.server.app import create_app
from xnat_ml.server.container_service import container_service
from xnat_ml.server.event_worker import event_service, launch_wrapper
from xnat_ml.server.store import db as server_db
from xnat_ml.server.store.event_store import DELIVERED, PENDING, DeliveryRow, EventRow
from xnat_ml.server.store.models import Project, Subject

ADMIN = {"Authorization": "Basic YWRtaW46YWRtaW4="}  # admin:admin
PROBE = {
    "name": "probe", "version": "1", "schema-version": "1.0", "type": "docker",
    "image": "busybox:latest", "command-line": "true", "inputs": [], "outputs": [],
    "xnat": [{"name": "probe-subject", "contexts": ["xnat:subjectData"],
              "external-inputs": [{"name": "subject", "type": "Subject", "required": True}],
              "derived-inputs": [], "output-handlers": []}],
}  # fmt: skip


@pytest.fixture
def app(tmp_path: Path):
    app = create_app(tmp_path, container_workers=1)
    client = app.test_client()
    assert client.put("/data/projects/OUT", headers=ADMIN).status_code in (200, 201)
    assert client.post("/xapi/commands", json=PROBE, headers=ADMIN).status_code == 201
    [command] = client.get("/xapi/commands", headers=ADMIN).get_json()
    app.wrapper = command["xnat"][0]["id"]
    for scope in ("", "/projects/OUT"):
        client.put(f"/xapi{scope}/wrappers/{app.wrapper}/enabled", headers=ADMIN)
    subscription = {
        "name": "OUT: subjects", "event-filter": {"event-type": "SubjectEvent"},
        "action-key": f"org.nrg.containers.services.CommandActionProvider:{app.wrapper}",
    }  # fmt: skip
    made = client.post("/xapi/projects/OUT/events/subscription", json=subscription,
                       headers=ADMIN)  # fmt: skip
    assert made.status_code == 201, made.text
    app.subscription = int(made.text.rsplit(":", 1)[1])
    app.submitted = []
    event_service.get(app).submit = app.submitted.append  # deliver by hand
    yield app
    container_service.get(app).shutdown()


def outbox(app) -> list[EventRow]:
    with server_db.session_factory(app)() as db:
        return list(db.scalars(select(EventRow).order_by(EventRow.id)))


def deliveries(app) -> list[DeliveryRow]:
    with server_db.session_factory(app)() as db:
        return list(db.scalars(select(DeliveryRow).order_by(DeliveryRow.id)))


def test_an_event_is_stored_with_its_change_and_queued_after_the_commit(app):
    with app.app_context(), server_db.session_factory(app)() as db:
        project = db.scalar(select(Project).where(Project.id == "OUT"))
        db.add(Subject(id="XNAT_S90001", project=project, label="gone", fields={}))
        db.flush()
        db.rollback()
        assert outbox(app) == [] and app.submitted == []

        db.add(Subject(id="XNAT_S90002", project=project, label="kept", fields={}))
        db.flush()
        assert app.submitted == []  # not before the commit
        db.commit()
    [event] = outbox(app)
    assert event.state == PENDING and event.payload["label"] == "kept"
    assert event.type.endswith("SubjectEvent") and event.project == "OUT"
    assert app.submitted == [event.id]


def test_a_request_that_fails_stores_no_event(app):
    client = app.test_client()
    refused = client.put("/data/projects/OUT/subjects/bad%00name", headers=ADMIN)
    assert refused.status_code == 400
    made = client.put("/data/projects/OUT/subjects/S1", headers=ADMIN)
    assert made.status_code == 201
    [event] = outbox(app)
    assert event.payload["label"] == "S1" and event.user == "admin"


def test_a_launch_records_its_delivery_once(app):
    client = app.test_client()
    assert client.put("/data/projects/OUT/subjects/S1", headers=ADMIN).status_code == 201
    [event] = outbox(app)
    worker = event_service.get(app)

    with app.app_context():
        [done] = worker.process(event.id)  # in process, as the subscription's owner
    jobs = client.get("/xapi/containers", headers=ADMIN).get_json()
    [delivery] = deliveries(app)
    assert (delivery.event_id, delivery.subscription_id) == (event.id, app.subscription)
    assert delivery.container_id == done.container_id == str(jobs[0]["id"])
    assert delivery.statuses[-1]["status"] == "ACTION_CALLED"
    assert jobs[0]["user-id"] == "admin" and jobs[0]["project"] == "OUT"

    # A second launch for the same event and subscription is refused with nothing created.
    with app.app_context(), pytest.raises(XnatMlError, match="already been delivered"):
        launch_wrapper("OUT", app.wrapper, event.payload["uri"], {}, "admin",
                       event_id=event.id, subscription_id=app.subscription)  # fmt: skip
    # The event delivered again (as after a restart) launches nothing more.
    with app.app_context():
        assert worker.process(event.id) == []
    assert [e.state for e in outbox(app)] == [DELIVERED]
    assert len(deliveries(app)) == 1
    assert len(client.get("/xapi/containers", headers=ADMIN).get_json()) == 1


def test_a_launch_that_finds_the_store_busy_leaves_the_event_pending(app, monkeypatch):
    client = app.test_client()
    assert client.put("/data/projects/OUT/subjects/S1", headers=ADMIN).status_code == 201
    [event] = outbox(app)

    def busy(*_args, **_kwargs):
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    monkeypatch.setattr(event_worker, "launch_on", busy)
    with app.app_context(), pytest.raises(Postponed, match="database is locked"):
        event_service.get(app).process(event.id)
    assert [e.state for e in outbox(app)] == [PENDING] and deliveries(app) == []
    assert client.get("/xapi/containers", headers=ADMIN).get_json() == []
