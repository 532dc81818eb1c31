"""Jobs, deliveries, subscriptions and wrapper switches stay inside their project.

The scenarios of issue 8: a project deleted and re-created under the same ID by a stranger
inherits nothing; a Member cannot launch their project's wrapper on another (public) project's
session; a user removed from a project no longer reads its jobs.
"""

from __future__ import annotations

import time
from pathlib import Path

ACTION = "org.nrg.containers.services.CommandActionProvider:{}"
SESSION_EVENT = "org.nrg.xnat.eventservice.events.SessionEvent"
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")
ROOT = "session"  # the batch-probe wrapper's (tests/events/conftest.py) root input


def _session(http, url: str, project: str, label: str) -> str:
    http.put(f"{url}/data/projects/{project}/subjects/S01").raise_for_status()
    answer = http.put(f"{url}/data/projects/{project}/subjects/S01/experiments/{label}",
                      params={"xsiType": "xnat:mrSessionData"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.text


def _launch(http, url: str, project: str, wrapper: int, session: str, seconds: int = 0):
    return http.post(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/root/{ROOT}/launch",
                     json={ROOT: session, "SECONDS": str(seconds)})  # fmt: skip


def _wait(http, url: str, job_id: int, statuses=FINAL, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"{url}/xapi/containers/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"container {job_id} still {job['status']}"
        time.sleep(0.1)


def _poll(probe, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, "nothing happened"
        time.sleep(0.2)
    return found


def test_a_deleted_project_leaves_nothing_to_a_namesake(xnat_server, probe_wrapper, enable_in):
    url, admin = xnat_server.url, xnat_server.session()
    project = "PB_GONE"
    admin.put(f"{url}/data/projects/{project}").raise_for_status()
    enable_in(project, probe_wrapper)
    session = _session(admin, url, project, "OLD_MR")
    subscription = {
        "name": "PB_GONE sessions", "active": True, "act-as-event-user": False,
        "event-filter": {"event-type": SESSION_EVENT, "status": "CREATED",
                         "project-ids": [project]},
        "action-key": ACTION.format(probe_wrapper), "attributes": {},
    }  # fmt: skip
    answer = admin.post(f"{url}/xapi/projects/{project}/events/subscription", json=subscription)
    assert answer.status_code == 201, answer.text
    sub_id = int(answer.text.rpartition(":")[2])
    _session(admin, url, project, "OLD_MR2")  # the subscription fires: a delivery and a job
    delivered = f"{url}/xapi/projects/{project}/events/delivered"
    _poll(lambda: admin.get(delivered).json())
    done = _launch(admin, url, project, probe_wrapper, session).json()["id"]
    assert _wait(admin, url, done)["status"] == "Complete"
    assert "OLD_MR" in admin.get(f"{url}/xapi/containers/{done}/logs/stdout").text
    running = _launch(admin, url, project, probe_wrapper, session, seconds=300).json()["id"]
    backend_id = _wait(admin, url, running, ("Running",))["container-id"]
    pid = int(backend_id.split("-")[1])  # local-<pid>-<name>
    old_jobs = [j["id"] for j in admin.get(f"{url}/xapi/projects/{project}/containers").json()]
    assert {done, running} <= set(old_jobs)

    assert admin.delete(f"{url}/data/projects/{project}").status_code == 200

    assert not Path(f"/proc/{pid}").exists(), "the running job was not killed"
    for job in old_jobs:
        assert not (xnat_server.data_dir / "containers" / str(job)).exists(), "logs remain"
        assert admin.get(f"{url}/xapi/containers/{job}").status_code == 404
    assert admin.get(f"{url}/xapi/events/subscription/{sub_id}").status_code == 404
    assert admin.get(f"{url}/xapi/events/delivered", params={"project": project}).json() == []

    xnat_server.add_user("pb_stranger", "stranger-pass")
    stranger = xnat_server.session("pb_stranger", "stranger-pass")
    stranger.put(f"{url}/data/projects/{project}").raise_for_status()
    assert stranger.get(f"{url}/xapi/projects/{project}/containers").json() == []
    assert stranger.get(f"{url}/xapi/containers", params={"project": project}).json() == []
    assert not set(old_jobs) & {j["id"] for j in stranger.get(f"{url}/xapi/containers").json()}
    for job in old_jobs:
        assert stranger.get(f"{url}/xapi/containers/{job}").status_code == 404
        assert stranger.get(f"{url}/xapi/containers/{job}/logs/stdout").status_code == 404
    assert stranger.post(f"{url}/xapi/containers/{running}/kill").status_code == 404
    assert stranger.get(delivered).json() == []
    listed = stranger.get(f"{url}/xapi/projects/{project}/events/subscriptions").json()
    assert sub_id not in [s["id"] for s in listed]
    switch = f"{url}/xapi/projects/{project}/wrappers/{probe_wrapper}"
    assert stranger.get(f"{switch}/enabled").json() is False

    # Had the admin's subscription survived, the stranger's session would now launch as admin.
    stranger.put(f"{switch}/enabled").raise_for_status()
    _session(stranger, url, project, "NEW_MR")
    time.sleep(2)  # the event worker answers within milliseconds
    assert [j for j in stranger.get(f"{url}/xapi/projects/{project}/containers").json()
            if j["user-id"] == "admin"] == []  # fmt: skip
    assert stranger.get(delivered).json() == []
    admin.delete(f"{url}/data/projects/{project}")


def test_launch_on_a_public_projects_session_is_refused(xnat_server, probe_wrapper, enable_in):
    """A Member of PA may read PB (public) but not run PA's wrapper on PB's data under PA."""
    url, admin = xnat_server.url, xnat_server.session()
    mine, theirs = "PA_LAUNCH", "PB_PUBLIC"
    for project in (mine, theirs):
        admin.put(f"{url}/data/projects/{project}").raise_for_status()
        enable_in(project, probe_wrapper)
    admin.put(f"{url}/data/projects/{theirs}/accessibility/public").raise_for_status()
    foreign = _session(admin, url, theirs, "PB_MR")
    own = _session(admin, url, mine, "PA_MR")
    xnat_server.add_user("pa_member", "member-pass", mine, "Member")
    member = xnat_server.session("pa_member", "member-pass")
    assert member.get(f"{url}/data/experiments/{foreign}").status_code == 200  # public: readable
    try:
        for value in (foreign, f"/archive/experiments/{foreign}",
                      f"/archive/projects/{theirs}/subjects/S01/experiments/PB_MR"):  # fmt: skip
            answer = _launch(member, url, mine, probe_wrapper, value)
            assert answer.status_code == 400, answer.text
            message = answer.json()["message"]
            assert f"'{ROOT}'" in message and theirs in message and mine in message
        bulk = member.post(
            f"{url}/xapi/projects/{mine}/wrappers/{probe_wrapper}/root/{ROOT}/bulklaunch",
            json={ROOT: [own, foreign]},
        ).json()
        assert len(bulk["successes"]) == 1
        [failure] = bulk["failures"]
        assert theirs in failure["message"]
        jobs = member.get(f"{url}/xapi/projects/{mine}/containers").json()
        assert all(theirs not in j["root-uri"] and foreign not in j["root-uri"] for j in jobs)
    finally:
        for project in (mine, theirs):
            admin.delete(f"{url}/data/projects/{project}")


def test_a_removed_member_no_longer_reads_the_jobs(xnat_server, probe_wrapper, enable_in):
    """Read needs a read role now, kill an edit role now: not whoever launched the job."""
    url, admin = xnat_server.url, xnat_server.session()
    project = "PA_REMOVED"
    admin.put(f"{url}/data/projects/{project}").raise_for_status()
    enable_in(project, probe_wrapper)
    session = _session(admin, url, project, "R_MR")
    xnat_server.add_user("leaving_member", "leaving-pass", project, "Member")
    member = xnat_server.session("leaving_member", "leaving-pass")
    users = f"{url}/data/projects/{project}/users"
    try:
        done = _launch(member, url, project, probe_wrapper, session).json()["id"]
        assert _wait(member, url, done)["status"] == "Complete"
        assert "R_MR" in member.get(f"{url}/xapi/containers/{done}/logs/stdout").text
        running = _launch(member, url, project, probe_wrapper, session, seconds=300).json()["id"]
        _wait(member, url, running, ("Running",))

        admin.delete(f"{users}/Members/leaving_member").raise_for_status()
        admin.put(f"{users}/Collaborators/leaving_member").raise_for_status()
        assert member.get(f"{url}/xapi/containers/{done}").status_code == 200
        assert member.post(f"{url}/xapi/containers/{running}/kill").status_code == 403

        admin.delete(f"{users}/Collaborators/leaving_member").raise_for_status()
        for job in (done, running):
            assert member.get(f"{url}/xapi/containers/{job}").status_code == 404
            assert member.get(f"{url}/xapi/containers/{job}/logs/stdout").status_code == 404
            assert member.get(f"{url}/xapi/containers/{job}/logs/stderr").status_code == 404
        assert member.post(f"{url}/xapi/containers/{running}/kill").status_code == 404
        listed = {j["id"] for j in member.get(f"{url}/xapi/containers").json()}
        assert not listed & {done, running}
        assert member.get(f"{url}/xapi/projects/{project}/containers").status_code == 403
        assert admin.post(f"{url}/xapi/containers/{running}/kill").status_code == 200
    finally:
        admin.delete(f"{url}/data/projects/{project}")


def test_a_subscription_of_several_projects_keeps_the_others(xnat_server, probe_wrapper, enable_in):
    url, admin = xnat_server.url, xnat_server.session()
    kept, gone = "PX_KEPT", "PY_GONE"
    for project in (kept, gone):
        admin.put(f"{url}/data/projects/{project}").raise_for_status()
        enable_in(project, probe_wrapper)
    subscription = {
        "name": "two projects", "active": True,
        "event-filter": {"event-type": SESSION_EVENT, "project-ids": [kept, gone]},
        "action-key": ACTION.format(probe_wrapper),
    }  # fmt: skip
    answer = admin.post(f"{url}/xapi/events/subscription", json=subscription)
    assert answer.status_code == 201, answer.text
    sub_id = int(answer.text.rpartition(":")[2])
    try:
        admin.delete(f"{url}/data/projects/{gone}").raise_for_status()
        left = admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()
        assert left["event-filter"]["project-ids"] == [kept]
    finally:
        admin.delete(f"{url}/xapi/events/subscription/{sub_id}")
        admin.delete(f"{url}/data/projects/{kept}")
