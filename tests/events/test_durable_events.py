"""Events and launches survive the server being killed: an ROI collection saved just before
the kill still gets its label map after the restart, with no other action, from exactly one
job, and its delivery is on record once.

The server is killed at fault points (`XNAT_ML_FAULT`, see xnat_ml/server/faults.py): right
after the ROI collection and its event commit (`event-stored`), and right after the job the
event launched commits (`job-created`). The roi-to-mask subscription is installed as in
test_roi_to_mask_e2e.py; jobs run on the local backend.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from xnat_ml.layout import LABELMAP_RESOURCE

pytestmark = pytest.mark.slow

WRAPPER = "roi-to-mask-roi-collection"
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")


def xnat_ml(server, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "xnat_ml", *args, "--url", server.url,
               "--user", server.user, "--password", server.password]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def killed_at_fault(server, timeout: float = 120) -> None:
    """Wait for the server to die at its fault point (SIGKILL), then forget the
    fault, so that `server.start()` restarts it plain."""
    deadline = time.monotonic() + timeout
    while server.process.poll() is None:
        assert time.monotonic() < deadline, "the server never reached its fault point"
        time.sleep(0.1)
    assert server.process.returncode == -signal.SIGKILL, server.log_tail()
    server.process = None
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
