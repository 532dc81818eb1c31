"""Site and membership behaviour as XNAT >= 1.7 has it, checked with unmodified pyxnat:
`/data/version` is gone (clients fall back to buildInfo), a project's last Owner may leave."""

from __future__ import annotations

import logging

import pytest
import pyxnat
import xnat
from dicom_samples import write_series, zip_folder

OWNER, OWNER_PASSWORD = "fidelity_owner", "fidelity-owner-pw"


def _pyxnat(server, user=None, password=None) -> pyxnat.Interface:
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    return pyxnat.Interface(
        server=server.url, user=user or server.user, password=password or server.password
    )


def test_pyxnat_version_falls_back_to_build_info(xnat_server):
    assert xnat_server.session().get(f"{xnat_server.url}/data/version").status_code == 404
    assert _pyxnat(xnat_server).version()["version"].startswith("1.8")


def test_the_last_owner_may_leave_and_the_admin_still_manages(xnat_server, project):
    xnat_server.add_user(OWNER, OWNER_PASSWORD, project, "Owner")
    admin = xnat_server.session()
    url = f"{xnat_server.url}/data/projects/{project}/users/Owners"
    assert admin.delete(f"{url}/admin").status_code == 200  # one Owner left
    owner = xnat_server.session(OWNER, OWNER_PASSWORD)
    assert owner.delete(f"{url}/{OWNER}").status_code == 200  # the last one leaves
    assert owner.get(f"{xnat_server.url}/data/projects/{project}").status_code == 403
    users = admin.get(f"{xnat_server.url}/data/projects/{project}/users").json()
    assert users["ResultSet"]["Result"] == []
    assert admin.put(f"{url}/admin").status_code == 200  # a site admin still manages it


B_OWNER, B_MEMBER, PASSWORD = "fidelity_b_owner", "fidelity_b_member", "fidelity-share-pw"


@pytest.fixture
def two_projects(xnat_server, project):
    """`project` (A: subject S1 with MR session E1; B_MEMBER is a Collaborator there) and B
    (B_OWNER its Owner, B_MEMBER a Member)."""
    admin, url = xnat_server.session(), xnat_server.url
    other = f"{project[:50]}_B"
    admin.put(f"{url}/data/projects/{other}").raise_for_status()
    admin.put(f"{url}/data/projects/{project}/subjects/S1").raise_for_status()
    session_id = admin.put(
        f"{url}/data/projects/{project}/subjects/S1/experiments/E1",
        params={"xsiType": "xnat:mrSessionData", "date": "2024-05-05"},
    ).text
    xnat_server.add_user(B_OWNER, PASSWORD, other, "Owner")
    xnat_server.add_user(B_MEMBER, PASSWORD, other, "Member")
    xnat_server.add_user(B_MEMBER, PASSWORD, project, "Collaborator")
    yield project, other, session_id
    admin.delete(f"{url}/data/projects/{other}")


def test_sharing_follows_xnat_rules_and_shared_data_is_read_only(xnat_server, two_projects):
    a, b, session_id = two_projects
    url = xnat_server.url
    admin = xnat_server.session()
    member = xnat_server.session(B_MEMBER, PASSWORD)
    b_owner = xnat_server.session(B_OWNER, PASSWORD)
    subject = f"{url}/data/projects/{a}/subjects/S1"
    # a Member of B who reads A may not share into B; B's Owner cannot read A
    assert member.put(f"{subject}/projects/{b}").status_code == 403
    assert b_owner.put(f"{subject}/projects/{b}").status_code == 403
    assert admin.put(f"{subject}/projects/{a}").status_code == 409  # its own project
    assert admin.put(f"{subject}/projects/{b}", params={"label": "SHARED1"}).status_code == 200
    assert admin.put(f"{subject}/projects/{b}").status_code == 409  # already shared
    experiment = f"{url}/data/experiments/{session_id}"
    assert admin.put(f"{experiment}/projects/{b}").status_code == 200
    # listed and readable in B by B's readers, with clients as they are
    interface = _pyxnat(xnat_server, B_MEMBER, PASSWORD)
    subject_id = admin.get(f"{subject}?format=json").json()["items"][0]["data_fields"]["ID"]
    assert interface.select.project(b).subjects().get() == [subject_id]
    listed = member.get(f"{url}/data/projects/{b}/subjects").json()["ResultSet"]["Result"]
    assert [r["label"] for r in listed] == ["SHARED1"]
    assert member.get(f"{url}/data/projects/{b}/subjects/SHARED1").status_code == 200
    rows = member.get(f"{url}/data/projects/{b}/experiments").json()["ResultSet"]["Result"]
    assert [r["ID"] for r in rows] == [session_id]
    projects = admin.get(f"{subject}/projects").json()["ResultSet"]["Result"]
    assert [(p["ID"], p["label"], p["owner"]) for p in projects] == [
        (a, "S1", "true"), (b, "SHARED1", "false")]  # fmt: skip
    # read-only through B: B's Owner neither edits nor deletes A's session
    shared_path = f"{url}/data/projects/{b}/experiments/E1"
    assert b_owner.get(shared_path).status_code == 200
    assert b_owner.put(shared_path, params={"note": "mine"}).status_code == 403
    assert b_owner.delete(shared_path).status_code == 403
    new_session = f"{url}/data/projects/{b}/experiments/E2"
    assert b_owner.put(new_session, params={"subject_ID": "SHARED1",
                       "xsiType": "xnat:mrSessionData"}).status_code == 403  # fmt: skip
    assert b_owner.put(f"{url}/data/projects/{b}/subjects/SHARED1/experiments/E3",
                       params={"xsiType": "xnat:mrSessionData"}).status_code == 403  # fmt: skip
    # unsharing: B's Owner may; then B's readers no longer see it
    assert member.delete(f"{experiment}/projects/{b}").status_code == 403
    assert b_owner.delete(f"{experiment}/projects/{b}").status_code == 200
    outsider = xnat_server.session(B_OWNER, PASSWORD)
    assert outsider.get(experiment).status_code == 403
    assert admin.get(experiment).status_code == 200  # the session itself is untouched


def test_prearchive_holds_imports_until_archived_or_deleted(xnat_server, project, tmp_path):
    write_series(tmp_path / "one", patient="PRE1", slices=2)
    write_series(tmp_path / "two", patient="PRE2", slices=1)
    (tmp_path / "one.zip").write_bytes(zip_folder(tmp_path / "one"))
    xnat_server.add_user("fidelity_collab", PASSWORD, project, "Collaborator")
    with xnat.connect(xnat_server.url, user=xnat_server.user, password=xnat_server.password,
                      loglevel="WARNING") as session:  # fmt: skip
        waiting = session.services.import_(
            tmp_path / "one.zip", project=project, destination=f"/prearchive/projects/{project}"
        )
        assert (waiting.subject, waiting.label, str(waiting.scan_date)) == (
            "PRE1_Test", "PRE1", "2024-01-31")  # fmt: skip
        assert list(session.projects[project].subjects) == []  # not archived yet
        assert [s.label for s in session.prearchive.sessions(project)] == ["PRE1"]
        experiment = waiting.archive(subject="PRE1S")
        assert experiment.label == "PRE1" and experiment.subject.label == "PRE1S"
        assert len(experiment.scans["1"].resources["DICOM"].files) == 2
        assert session.prearchive.sessions(project) == []
    assert not list((xnat_server.data_dir / "prearchive").iterdir())
    # a second upload is thrown away with pyxnat's prearchive delete
    http = xnat_server.session()
    uri = http.post(f"{xnat_server.url}/data/services/import",
                    params={"dest": f"/prearchive/projects/{project}"},
                    data=zip_folder(tmp_path / "two")).text.strip()  # fmt: skip
    collaborator = xnat_server.session("fidelity_collab", PASSWORD)
    listing = f"{xnat_server.url}/data/prearchive/projects/{project}"
    assert collaborator.get(listing).status_code == 403
    assert collaborator.post(f"{xnat_server.url}/data/services/archive",
                             params={"src": uri}).status_code == 403  # fmt: skip
    rows = http.get(listing).json()["ResultSet"]["Result"]
    assert [f"/data{r['url']}" for r in rows] == [uri]
    _pyxnat(xnat_server).manage.prearchive.delete(uri)
    assert http.get(listing).json()["ResultSet"]["Result"] == []
    assert not list((xnat_server.data_dir / "prearchive").iterdir())
    # deleting the project takes its waiting uploads along
    http.post(f"{xnat_server.url}/data/services/import", params={
        "dest": "/prearchive", "project": project}, data=zip_folder(tmp_path / "two"))  # fmt: skip
    assert list((xnat_server.data_dir / "prearchive").iterdir())
    assert http.delete(f"{xnat_server.url}/data/projects/{project}").status_code == 200
    assert not list((xnat_server.data_dir / "prearchive").iterdir())
