"""Events and launches survive the server being killed: an ROI collection saved just before
the kill still gets its label map after the restart, with no other action, from exactly one
job, and its delivery is on record once.

The server is killed at fault points (`XNAT_ML_FAULT`, see xnat_ml/server/faults.py): right
after the ROI collection and its event commit (`event-stored`; the restart may be on another
port: stored events name no address), right after the job the
event launched commits (`job-created`), while that job runs (`job-started`) and while its
outputs upload (`job-outputs.uploading`): the job is then requeued, keeping its id. A job that
crashes the server every time is given up after three attempts. The roi-to-mask subscription
is installed as in test_roi_to_mask_e2e.py; jobs run on the local backend.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from archive_state import assert_consistent

from xnat_ml.errors import XnatMlError
from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.server.process import free_port

pytestmark = pytest.mark.slow

WRAPPER = "roi-to-mask-roi-collection"
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")


def xnat_ml(server, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "xnat_ml", *args, "--url", server.url,
               "--user", server.user, "--password", server.password]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def killed_at_fault(server, timeout: float = 120, disarm: bool = True) -> None:
    """Wait for the server to die at its fault point (SIGKILL), then (`disarm`) forget the
    fault, so that `server.start()` restarts it plain."""
    deadline = time.monotonic() + timeout
    while server.process.poll() is None:
        assert time.monotonic() < deadline, "the server never reached its fault point"
        time.sleep(0.1)
    assert server.process.returncode == -signal.SIGKILL, server.log_tail()
    server.process = None
    if disarm:
        server.env.pop("XNAT_ML_FAULT")


def rows(server, query: str) -> list[tuple]:
    """Read the server's database directly (it is down, or in WAL mode: reading is safe)."""
    with sqlite3.connect(server.data_dir / "xnat-ml.sqlite") as db:
        return db.execute(query).fetchall()


def finished_jobs(server, project: str, count: int, timeout: float = 240) -> list[dict]:
    http, deadline = server.session(), time.monotonic() + timeout
    while True:
        jobs = http.get(f"{server.url}/xapi/containers", params={"project": project}).json()
        mine = [j for j in jobs if j["wrapper-name"] == WRAPPER]
        if len(mine) >= count and all(j["status"] in FINAL for j in mine):
            return mine
        assert time.monotonic() < deadline, f"not {count} finished jobs: {jobs}"
        time.sleep(0.5)


def assert_every_collection_has_its_label_map(server, project: str) -> int:
    """Each ROI collection of the project holds a LABELMAP; how many collections there are."""
    http, url = server.session(), server.url
    collections = 0
    sessions = http.get(f"{url}/data/projects/{project}/experiments",
                        params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    for session in sessions:
        listing = http.get(f"{url}/data/experiments/{session['ID']}/assessors",
                           params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
        for roi in listing:
            collections += 1
            found = http.get(f"{url}/data/experiments/{session['ID']}/assessors/{roi['ID']}"
                             f"/resources/{LABELMAP_RESOURCE}/files", params={"format": "json"})
            assert found.status_code == 200, f"{roi['label']}: no {LABELMAP_RESOURCE}"
            assert found.json()["ResultSet"]["Result"], f"{roi['label']}: empty {LABELMAP_RESOURCE}"
    return collections


def assert_one_job_and_one_delivery_per_event(server, project: str) -> None:
    jobs = finished_jobs(server, project, 1)
    time.sleep(2)  # a second launch for the same event would show up by now
    jobs = finished_jobs(server, project, 1)
    assert all(j["status"] == "Complete" for j in jobs), jobs
    deliveries = server.session().get(f"{server.url}/xapi/events/delivered",
                                      params={"project": project}).json()  # fmt: skip
    events = rows(server, "SELECT id, state FROM event_outbox ORDER BY id")
    assert [state for _id, state in events] == ["delivered"] * len(events)
    assert len(jobs) == len(events) == len(deliveries), (jobs, events, deliveries)
    assert sorted(d["container-id"] for d in deliveries) == sorted(str(j["id"]) for j in jobs)
    recorded = rows(server, "SELECT event_id FROM event_deliveries ORDER BY event_id")
    assert recorded == [(event_id,) for event_id, _state in events]


def install_subscription(server, project: str) -> None:
    server.session().put(f"{server.url}/data/projects/{project}").raise_for_status()
    installed = xnat_ml(server, "events", "install", "--project", project)
    assert installed.returncode == 0, installed.stderr


def test_roi_saved_just_before_a_kill_gets_its_label_map(start_xnat_server):
    server = start_xnat_server("event-stored", env={"XNAT_ML_FAULT": "event-stored"})
    install_subscription(server, "DUR1")

    made = xnat_ml(server, "sample-data", "--project", "DUR1", "--subjects", "1")
    killed_at_fault(server)
    assert made.returncode == 1 and len(made.stderr.strip().splitlines()) == 1, made.stderr
    # The collection and its event committed together; nothing was dispatched.
    assert rows(server, "SELECT state FROM event_outbox") == [("pending",)]
    assert rows(server, "SELECT COUNT(*) FROM cs_containers") == [(0,)]

    server.start()
    assert_one_job_and_one_delivery_per_event(server, "DUR1")
    assert assert_every_collection_has_its_label_map(server, "DUR1") == 1


def test_event_stored_before_a_crash_is_delivered_on_another_port(start_xnat_server):
    """Stored events name no address: the restarted server, on a new port, delivers the event
    in process and its job calls the server where it listens now."""
    server = start_xnat_server("event-moved", env={"XNAT_ML_FAULT": "event-stored"})
    install_subscription(server, "DUR3")

    xnat_ml(server, "sample-data", "--project", "DUR3", "--subjects", "1")  # sees the kill
    killed_at_fault(server)
    assert rows(server, "SELECT state FROM event_outbox") == [("pending",)]

    old_port, server.port = server.port, free_port()
    server.start()
    assert server.port != old_port
    assert_one_job_and_one_delivery_per_event(server, "DUR3")
    assert assert_every_collection_has_its_label_map(server, "DUR3") == 1
    assert rows(server, "SELECT host FROM cs_containers") == [(server.url,)]


def test_event_stored_with_an_address_before_the_upgrade_is_delivered(start_xnat_server):
    """An event an older xnat-ml stored with an address (schema 0004's event_outbox.site_url,
    here a dead one) is delivered in process after the upgrade that drops the column."""
    from alembic import command
    from sqlalchemy import create_engine

    from xnat_ml.server.store.schema import alembic_config

    server = start_xnat_server("event-addressed", env={"XNAT_ML_FAULT": "event-stored"})
    install_subscription(server, "DUR4")
    xnat_ml(server, "sample-data", "--project", "DUR4", "--subjects", "1")  # sees the kill
    killed_at_fault(server)
    engine = create_engine(f"sqlite:///{server.data_dir / 'xnat-ml.sqlite'}")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
        conn.exec_driver_sql("UPDATE event_outbox SET site_url = 'http://127.0.0.1:9/'")
    engine.dispose()
    assert rows(server, "SELECT state, site_url FROM event_outbox") == [
        ("pending", "http://127.0.0.1:9/")
    ]

    server.start()
    assert_one_job_and_one_delivery_per_event(server, "DUR4")
    assert assert_every_collection_has_its_label_map(server, "DUR4") == 1
    with sqlite3.connect(server.data_dir / "xnat-ml.sqlite") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(event_outbox)")]
    assert "site_url" not in columns


def test_job_created_just_before_a_kill_runs_once(start_xnat_server):
    server = start_xnat_server("job-created", env={"XNAT_ML_FAULT": "job-created"})
    install_subscription(server, "DUR2")

    xnat_ml(server, "sample-data", "--project", "DUR2", "--subjects", "1")  # may see the kill
    killed_at_fault(server)
    # The job and its delivery committed together; the event is still pending.
    assert rows(server, "SELECT status FROM cs_containers") == [("Created",)]
    [(event_id, state)] = rows(server, "SELECT id, state FROM event_outbox")
    assert state == "pending"
    assert rows(server, "SELECT event_id, container_id FROM event_deliveries") == [
        (event_id, str(rows(server, "SELECT id FROM cs_containers")[0][0]))
    ]

    server.start()  # redelivers the event (which launches nothing) and starts the job
    assert_one_job_and_one_delivery_per_event(server, "DUR2")
    assert assert_every_collection_has_its_label_map(server, "DUR2") == 1

    # Business as usual afterwards: a second subject's collection gets its own label map.
    again = xnat_ml(server, "sample-data", "--project", "DUR2", "--subjects", "2")
    assert again.returncode == 0, again.stderr
    finished_jobs(server, "DUR2", 2)
    assert_one_job_and_one_delivery_per_event(server, "DUR2")
    assert assert_every_collection_has_its_label_map(server, "DUR2") == 2


def label_map_files(server) -> list[tuple]:
    return rows(server, "SELECT f.path FROM resource_files f JOIN resources r "
                        f"ON f.resource_pk = r.pk WHERE r.label = '{LABELMAP_RESOURCE}'")


def results(server) -> list[tuple]:
    """(label, count) of the resources roi-to-mask makes: the label map and the image NIfTI."""
    return rows(server, "SELECT label, COUNT(*) FROM resources WHERE label IN "
                        f"('{LABELMAP_RESOURCE}', '{NIFTI_RESOURCE}') GROUP BY label "
                        "ORDER BY label")


@pytest.mark.parametrize(("point", "project"), [("job-started", "REQRUN"),
                                                ("job-outputs.uploading", "REQUP")])
def test_roi_to_mask_job_ended_by_a_kill_is_requeued(start_xnat_server, point, project):
    """kill -9 while the roi-to-mask job runs, or right after its LABELMAP upload committed
    (its end not recorded): at restart the same job is requeued, its first attempt's writes
    undone, and runs to Complete, with no other action."""
    server = start_xnat_server(f"requeue-{point}", env={"XNAT_ML_FAULT": point})
    install_subscription(server, project)

    xnat_ml(server, "sample-data", "--project", project, "--subjects", "1")  # may see the kill
    killed_at_fault(server)
    [(job_id, status)] = rows(server, "SELECT id, status FROM cs_containers")
    assert status == ("Running" if point == "job-started" else "Finalizing")
    if point == "job-outputs.uploading":  # the upload is in, not yet kept: undone at restart
        assert label_map_files(server)
        assert rows(server, f"SELECT COUNT(*) FROM job_writes WHERE job_id = {job_id}")[0][0]

    server.start()
    assert_one_job_and_one_delivery_per_event(server, project)
    assert assert_every_collection_has_its_label_map(server, project) == 1
    job = server.session().get(f"{server.url}/xapi/containers/{job_id}").json()
    assert job["status"] == "Complete", job
    messages = [(h["status"], h["message"]) for h in job["history"]]
    assert ("Created", "requeued after a server restart (attempt 2 of 3)") in messages, messages
    assert [h["status"] for h in job["history"]][-3:] == ["Running", "Finalizing", "Complete"]
    assert results(server) == [(LABELMAP_RESOURCE, 1), (NIFTI_RESOURCE, 1)]  # none twice
    assert rows(server, "SELECT COUNT(*) FROM job_writes") == [(0,)]
    server.stop()
    assert_consistent(server.data_dir)


def test_a_job_that_keeps_crashing_the_server_fails_after_three_attempts(start_xnat_server):
    """The server dies each time the job starts: requeued twice, then Failed naming its
    attempts; the collection is left without a label map and the archive whole."""
    server = start_xnat_server("requeue-loop", env={"XNAT_ML_FAULT": "job-started"})
    install_subscription(server, "LOOP")

    xnat_ml(server, "sample-data", "--project", "LOOP", "--subjects", "1")
    killed_at_fault(server, disarm=False)
    for _attempt in (2, 3):
        try:
            server.start()
        except XnatMlError:  # died at its fault point before it was seen answering
            assert server.process is None and "Traceback" not in server.log_tail(5)
            continue
        killed_at_fault(server, disarm=False)
    server.env.pop("XNAT_ML_FAULT")
    server.start()

    [job] = finished_jobs(server, "LOOP", 1)
    assert job["status"] == "Failed", job
    assert job["message"] == ("the server stopped while the job ran, in each of its 3 attempts; "
                              "not requeued")  # fmt: skip
    messages = [h["message"] for h in job["history"]]
    assert [m for m in messages if m.startswith("requeued")] == [
        "requeued after a server restart (attempt 2 of 3)",
        "requeued after a server restart (attempt 3 of 3)",
    ]
    assert rows(server, "SELECT COUNT(*) FROM event_deliveries") == [(1,)]
    assert label_map_files(server) == [] and results(server) == []
    assert rows(server, "SELECT COUNT(*) FROM job_writes") == [(0,)]
    server.stop()
    assert_consistent(server.data_dir)
