"""The /xapi/events REST API on the embedded server: CRUD, XNAT's answers, and who may do what."""

from __future__ import annotations

import itertools
import time

import pytest

ACTION = "org.nrg.containers.services.CommandActionProvider:{}"
SCAN_EVENT = "org.nrg.xnat.eventservice.events.ScanEvent"
_names = itertools.count(1)


def a_subscription(wrapper: int, project: str | None = None, **changes) -> dict:
    doc = {
        "name": f"test subscription {next(_names)}",
        "active": True,
        "event-filter": {
            "event-type": SCAN_EVENT,
            "status": "CREATED",
            "project-ids": [project] if project else [],
            "payload-filter": "@.scan-type == 'CT'",
        },
        "action-key": ACTION.format(wrapper),
        "attributes": {"threshold": "0.5"},
        "act-as-event-user": True,
    }
    return doc | changes


@pytest.fixture
def subscription(probe_wrapper, project, enable_in):
    """Make a valid subscription document naming the installed probe wrapper, which is enabled
    in `project` and in the project the document names."""
    enable_in(project, probe_wrapper)

    def make(named: str | None = None, **changes) -> dict:
        if named:
            enable_in(named, probe_wrapper)
        return a_subscription(probe_wrapper, named, **changes)

    return make


@pytest.fixture
def admin(xnat_server):
    return xnat_server.session()


def created_id(response) -> int:
    assert response.status_code == 201, response.text
    name, _, sub_id = response.text.rpartition(":")
    assert name
    return int(sub_id)


def test_admin_crud_round_trip(xnat_server, admin, subscription):
    url = xnat_server.url
    doc = subscription()
    sub_id = created_id(admin.post(f"{url}/xapi/events/subscription", json=doc))

    listed = admin.get(f"{url}/xapi/events/subscriptions").json()
    assert sub_id in [s["id"] for s in listed]
    got = admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()
    assert got["name"] == doc["name"]
    assert got["subscription-owner"] == "admin"
    assert got["event-filter"]["payload-filter"] == "@.scan-type == 'CT'"
    assert got["act-as-event-user"] is True

    # PUT takes a partial update; what GET returns can be PUT back unchanged.
    assert admin.put(f"{url}/xapi/events/subscription/{sub_id}",
                     json={"attributes": {"threshold": "0.7"}}).status_code == 200
    got = admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()
    assert got["attributes"] == {"threshold": "0.7"} and got["name"] == doc["name"]
    assert admin.put(f"{url}/xapi/events/subscription/{sub_id}", json=got).status_code == 200

    assert admin.post(f"{url}/xapi/events/subscription/{sub_id}/deactivate").status_code == 200
    assert admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()["active"] is False
    assert admin.post(f"{url}/xapi/events/subscription/{sub_id}/activate").status_code == 200
    assert admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()["active"] is True

    assert admin.delete(f"{url}/xapi/events/subscription/{sub_id}").status_code == 204
    assert admin.get(f"{url}/xapi/events/subscription/{sub_id}").status_code == 404
    assert admin.delete(f"{url}/xapi/events/subscription/{sub_id}").status_code == 404


def test_invalid_subscriptions_are_424_naming_the_field(xnat_server, admin, subscription):
    url = f"{xnat_server.url}/xapi/events/subscription"
    bad_status = subscription()
    bad_status["event-filter"]["status"] = "DONE"
    response = admin.post(url, json=bad_status)
    assert response.status_code == 424
    assert "Subscription format failed to validate." in response.text
    assert "'event-filter.status'" in response.text

    bad_filter = subscription()
    bad_filter["event-filter"]["payload-filter"] = "@.scan-type == "
    response = admin.post(url, json=bad_filter)
    assert response.status_code == 424 and "payload-filter" in response.text

    doc = subscription()
    sub_id = created_id(admin.post(url, json=doc))
    response = admin.post(url, json=doc)
    assert response.status_code == 424 and "'name'" in response.text
    admin.delete(f"{url}/{sub_id}")  # site-wide: it would see every other test's events


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00", b"[" * 100_000, b'{"name": ' + b'"x' * 10],
)
def test_hostile_bodies_are_400(xnat_server, admin, body):
    response = admin.post(f"{xnat_server.url}/xapi/events/subscription", data=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_site_routes_are_for_admins(xnat_server, project, subscription):
    url = xnat_server.url
    xnat_server.add_user("ev_owner", "pw-owner", project, "Owner")
    owner = xnat_server.session("ev_owner", "pw-owner")
    assert owner.post(f"{url}/xapi/events/subscription", json=subscription()).status_code == 403
    assert owner.get(f"{url}/xapi/events/subscriptions").status_code == 403
    anonymous = xnat_server.session()
    anonymous.auth = None
    assert anonymous.get(f"{url}/xapi/events/subscriptions").status_code == 401
    # Anyone logged in may read the event types.
    events = owner.get(f"{url}/xapi/events/events").json()
    by_type = {e["type"].rsplit(".", 1)[1]: e for e in events}
    assert by_type["ImageAssessorEvent"]["statuses"] == ["CREATED", "UPDATED"]
    assert len(by_type) == 9


def test_project_owners_manage_their_subscriptions(xnat_server, project, admin, subscription):
    url = xnat_server.url
    base = f"{url}/xapi/projects/{project}/events"
    xnat_server.add_user("ev_owner2", "pw-owner", project, "Owner")
    xnat_server.add_user("ev_member", "pw-member", project, "Member")
    xnat_server.add_user("ev_collab", "pw-collab", project, "Collaborator")
    owner = xnat_server.session("ev_owner2", "pw-owner")

    # project-ids left empty means this project; act-as-event-user is forced off (as in XNAT).
    doc = subscription()
    sub_id = created_id(owner.post(f"{base}/subscription", json=doc))
    got = owner.get(f"{base}/subscription/{sub_id}").json()
    assert got["event-filter"]["project-ids"] == [project]
    assert got["act-as-event-user"] is False
    assert got["subscription-owner"] == "ev_owner2"
    assert got["editable"] is True
    assert sub_id in [s["id"] for s in owner.get(f"{base}/subscriptions").json()]

    assert owner.put(f"{base}/subscription/{sub_id}", json={"active": False}).status_code == 200
    assert owner.post(f"{base}/subscription/{sub_id}/activate").status_code == 200
    assert owner.get(f"{base}/delivered").status_code == 200

    for name, password in (("ev_member", "pw-member"), ("ev_collab", "pw-collab")):
        other = xnat_server.session(name, password)
        assert other.post(f"{base}/subscription", json=subscription()).status_code == 403
        assert other.get(f"{base}/subscriptions").status_code == 403
        assert other.delete(f"{base}/subscription/{sub_id}").status_code == 403

    assert owner.delete(f"{base}/subscription/{sub_id}").status_code == 204


def test_owners_cannot_reach_other_projects(xnat_server, project, admin, subscription):
    url = xnat_server.url
    other_project = f"{project}_B"
    admin.put(f"{url}/data/projects/{other_project}").raise_for_status()
    try:
        xnat_server.add_user("ev_owner3", "pw-owner", project, "Owner")
        owner = xnat_server.session("ev_owner3", "pw-owner")
        # A subscription of the other project, made by the admin...
        theirs = created_id(admin.post(f"{url}/xapi/projects/{other_project}/events/subscription",
                                       json=subscription(other_project)))
        # ...cannot be read, changed or deleted through the owner's own project,
        base = f"{url}/xapi/projects/{project}/events"
        assert owner.get(f"{base}/subscription/{theirs}").status_code == 403
        assert owner.put(f"{base}/subscription/{theirs}", json={"active": False}).status_code == 403
        assert owner.delete(f"{base}/subscription/{theirs}").status_code == 403
        # ...nor through the other project's routes.
        other_base = f"{url}/xapi/projects/{other_project}/events"
        assert owner.get(f"{other_base}/subscription/{theirs}").status_code == 403
        # Nor may the owner create a subscription that also names the other project.
        both = subscription(project)
        both["event-filter"]["project-ids"] = [project, other_project]
        assert owner.post(f"{base}/subscription", json=both).status_code == 403
        assert admin.get(f"{url}/xapi/events/subscription/{theirs}").json()["active"] is True
    finally:
        admin.delete(f"{url}/data/projects/{other_project}")


def wait_for_deliveries(admin, url: str, project: str, count: int, timeout: float = 30.0,
                        **query) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = admin.get(f"{url}/xapi/events/delivered", params={"project": project, **query})
        found.raise_for_status()
        if len(found.json()) >= count or time.monotonic() > deadline:
            return found.json()
        time.sleep(0.2)


def test_events_launch_matching_subscriptions(xnat_server, project, admin, subscription):
    """A Member creates a session: the matching site-wide subscription launches the wrapper on
    it as that Member (act-as-event-user); a launch the Container Service refuses, and a
    payload-filter mismatch, are history; the creating request is not affected."""
    url = xnat_server.url
    xnat_server.add_user("ev_member2", "pw-member", project, "Member")
    member = xnat_server.session("ev_member2", "pw-member")
    session_event = {"event-type": "SessionEvent", "status": "CREATED", "project-ids": [project]}

    # Only a site-wide subscription may act as the event's user (deleted when the test ends).
    launching = subscription(**{"act-as-event-user": True, "attributes": {}})
    launching["event-filter"] = dict(session_event, **{
        "project-ids": [], "payload-filter": "@.label =~ /PAT.*/"})
    launching_id = created_id(admin.post(f"{url}/xapi/events/subscription", json=launching))
    try:
        _launch_matching(xnat_server, project, admin, subscription, member, launching_id)
    finally:
        admin.delete(f"{url}/xapi/events/subscription/{launching_id}")


def _launch_matching(xnat_server, project, admin, subscription, member, launching_id) -> None:
    url = xnat_server.url
    session_event = {"event-type": "SessionEvent", "status": "CREATED", "project-ids": [project]}
    refused = subscription(project, attributes={"SECONDS": "soon"}, **{"act-as-event-user": False})
    refused["event-filter"] = session_event
    refused_id = created_id(admin.post(f"{url}/xapi/events/subscription", json=refused))
    other = subscription(project)
    other["event-filter"] = dict(session_event, **{"payload-filter": "@.label == 'nobody'"})
    other_id = created_id(admin.post(f"{url}/xapi/events/subscription", json=other))

    member.put(f"{url}/data/projects/{project}/subjects/S01").raise_for_status()
    response = member.put(f"{url}/data/projects/{project}/subjects/S01/experiments/PAT001_MR",
                          params={"xsiType": "xnat:mrSessionData"})  # fmt: skip
    assert response.status_code == 201, response.text

    deliveries = {d["subscription"]["id"]: d for d in wait_for_deliveries(admin, url, project, 2)}
    launched = deliveries[launching_id]
    assert launched["error"] is False and launched["container-id"]
    assert launched["user"] == "ev_member2"
    assert launched["trigger"]["label"] == "PAT001_MR"
    assert launched["status"][-1]["status"] == "ACTION_CALLED"
    job = admin.get(f"{url}/xapi/containers/{launched['container-id']}").json()
    assert job["user-id"] == "ev_member2" and job["wrapper-name"] == "batch-probe"

    failed = deliveries[refused_id]
    assert failed["error"] is True and failed["container-id"] is None
    assert failed["user"] == "admin"  # not act-as-event-user: the subscription's owner
    assert failed["status"][-1]["status"] == "ACTION_FAILED"
    assert "SECONDS" in failed["status-message"]

    # The filter mismatch is history too, shown on request (as in XNAT).
    everything = wait_for_deliveries(admin, url, project, 3, **{"include-filter-mismatch": "true"})
    mismatch = [d for d in everything if d["subscription"]["id"] == other_id]
    assert mismatch and mismatch[0]["status"][-1]["status"] == "OBJECT_FILTER_MISMATCH_HALT"
    one = admin.get(f"{url}/xapi/events/delivered/{launched['id']}").json()
    assert one["container-id"] == launched["container-id"]


def test_subscriptions_name_installed_enabled_wrappers(xnat_server, project, admin, subscription):
    url = xnat_server.url
    missing = subscription(project, **{"action-key": ACTION.format(987654)})
    response = admin.post(f"{url}/xapi/events/subscription", json=missing)
    assert response.status_code == 424 and "wrapper 987654 is not installed" in response.text
    doc = subscription(project)
    wrapper = doc["action-key"].rsplit(":", 1)[1]
    admin.put(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/disabled").raise_for_status()
    response = admin.post(f"{url}/xapi/events/subscription", json=doc)
    assert response.status_code == 424 and "not enabled in project" in response.text


def test_an_owner_editing_an_admins_subscription_becomes_its_owner(
    xnat_server, project, admin, subscription
):
    """Finding: an owner edited an admin's project subscription and it kept running as the
    admin, so an attribute the owner chose ran with (and could print) the admin's alias token.
    The editor now becomes the owner: the launch runs as them."""
    url = xnat_server.url
    base = f"{url}/xapi/projects/{project}/events"
    xnat_server.add_user("ev_owner4", "pw-owner", project, "Owner")
    xnat_server.add_user("ev_member4", "pw-member", project, "Member")
    owner = xnat_server.session("ev_owner4", "pw-owner")
    doc = subscription(project, attributes={}, **{"act-as-event-user": False})
    doc["event-filter"] = {"event-type": "SessionEvent", "status": "CREATED",
                           "project-ids": [project]}  # fmt: skip
    sub_id = created_id(admin.post(f"{url}/xapi/events/subscription", json=doc))
    assert owner.get(f"{base}/subscription/{sub_id}").json()["subscription-owner"] == "admin"

    edited = owner.put(f"{base}/subscription/{sub_id}", json={"attributes": {"SECONDS": "0"}})
    assert edited.status_code == 200, edited.text
    assert owner.get(f"{base}/subscription/{sub_id}").json()["subscription-owner"] == "ev_owner4"
    # Switching it on and off is not an edit: the owner stays.
    admin.post(f"{url}/xapi/events/subscription/{sub_id}/deactivate").raise_for_status()
    admin.post(f"{url}/xapi/events/subscription/{sub_id}/activate").raise_for_status()
    assert admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()[
        "subscription-owner"] == "ev_owner4"  # fmt: skip

    member = xnat_server.session("ev_member4", "pw-member")
    member.put(f"{url}/data/projects/{project}/subjects/S01").raise_for_status()
    member.put(f"{url}/data/projects/{project}/subjects/S01/experiments/MR4",
               params={"xsiType": "xnat:mrSessionData"}).raise_for_status()  # fmt: skip
    [delivery] = wait_for_deliveries(admin, url, project, 1, **{"subscription-id": sub_id})
    assert delivery["user"] == "ev_owner4" and delivery["error"] is False, delivery
    job = admin.get(f"{url}/xapi/containers/{delivery['container-id']}").json()
    assert job["user-id"] == "ev_owner4"


def test_act_as_event_user_stays_off_on_project_subscriptions(
    xnat_server, project, admin, subscription
):
    """Finding: PUT stored act-as-event-user=true (only creation forced it off)."""
    url = xnat_server.url
    base = f"{url}/xapi/projects/{project}/events"
    xnat_server.add_user("ev_owner5", "pw-owner", project, "Owner")
    owner = xnat_server.session("ev_owner5", "pw-owner")
    sub_id = created_id(owner.post(f"{base}/subscription", json=subscription()))

    def act_as() -> bool:
        return admin.get(f"{url}/xapi/events/subscription/{sub_id}").json()["act-as-event-user"]

    on = {"act-as-event-user": True}
    assert owner.put(f"{base}/subscription/{sub_id}", json=on).status_code == 200
    assert act_as() is False
    assert admin.put(f"{base}/subscription/{sub_id}", json=on).status_code == 200  # project route
    assert act_as() is False
    assert admin.put(f"{url}/xapi/events/subscription/{sub_id}", json=on).status_code == 200
    assert act_as() is False
    created = created_id(admin.post(f"{url}/xapi/events/subscription",
                                    json=subscription(project, **on)))  # fmt: skip
    assert admin.get(f"{url}/xapi/events/subscription/{created}").json()[
        "act-as-event-user"] is False  # fmt: skip
    # Site-wide subscriptions (site admins only) may still run as the event's user.
    site_wide = created_id(admin.post(f"{url}/xapi/events/subscription", json=subscription(**on)))
    try:
        assert admin.get(f"{url}/xapi/events/subscription/{site_wide}").json()[
            "act-as-event-user"] is True  # fmt: skip
    finally:
        admin.delete(f"{url}/xapi/events/subscription/{site_wide}")
