"""Unmodified xnatpy and pyxnat against `xnat-ml serve`: the core flows users run."""

from __future__ import annotations

import logging
import uuid

import pytest
import pyxnat
import xnat
import xnat.exceptions


@pytest.fixture
def xnatpy(xnat_server):
    with xnat.connect(
        xnat_server.url, user=xnat_server.user, password=xnat_server.password, loglevel="WARNING"
    ) as session:
        yield session


def test_xnatpy_creates_and_traverses_the_hierarchy(xnatpy, project):
    proj = xnatpy.projects[project]
    subject = xnatpy.classes.SubjectData(parent=proj, label="SUBJ1")
    session = xnatpy.classes.MrSessionData(parent=subject, label="SESS1", date="2024-02-03")
    xnatpy.classes.MrScanData(parent=session, id="7", type="T2w", series_description="t2 tse")
    xnatpy.put(
        f"{session.fulluri}/assessors/ROI1",
        query={
            "xsiType": "icr:roiCollectionData",
            "label": "ROI1",
            "icr:roiCollectionData/collectionType": "SEG",
        },
    )
    xnatpy.clearcache()

    proj = xnatpy.projects[project]
    assert list(proj.subjects.keys()) == [subject.id]
    found = proj.subjects["SUBJ1"].experiments["SESS1"]
    assert found.id == session.id and found.label == "SESS1"
    assert str(found.date) == "2024-02-03"
    assert type(found).__name__ == "MrSessionData"
    scan = found.scans["7"]
    assert (scan.type, scan.series_description) == ("T2w", "t2 tse")
    assert type(scan).__name__ == "MrScanData"
    roi = found.assessors["ROI1"]
    assert type(roi).__xsi_type__ == "icr:roiCollectionData"
    assert xnatpy.experiments[session.id].label == "SESS1"
    assert proj.experiments["SESS1"].subject.label == "SUBJ1"


def test_xnatpy_bulk_listing_and_delete(xnatpy, project):
    proj = xnatpy.projects[project]
    for n in range(3):
        subject = xnatpy.classes.SubjectData(parent=proj, label=f"S{n}")
        xnatpy.classes.CtSessionData(parent=subject, label=f"CT{n}")
    rows = xnatpy.get_json(
        "/data/experiments",
        query={
            "project": project,
            "xsiType": "xnat:ctSessionData",
            "columns": "ID,label,subject_label,xsiType",
        },
    )["ResultSet"]["Result"]
    assert [(r["label"], r["subject_label"]) for r in rows] == [
        ("CT0", "S0"),
        ("CT1", "S1"),
        ("CT2", "S2"),
    ]
    xnatpy.clearcache()
    xnatpy.projects[project].experiments["CT1"].delete()
    xnatpy.clearcache()
    assert sorted(xnatpy.projects[project].experiments.keys()) == sorted(
        r["ID"] for r in rows if r["label"] != "CT1"
    )


def test_xnatpy_wrong_password_fails_to_connect(xnat_server):
    with pytest.raises(xnat.exceptions.XNATLoginFailedError):
        xnat.connect(xnat_server.url, user=xnat_server.user, password="not-it", loglevel="CRITICAL")


def test_xnatpy_logs_in_with_an_alias_token(xnat_server, xnatpy):
    token = xnatpy.services.issue_token()
    with xnat.connect(
        xnat_server.url, user=token.alias, password=token.secret, loglevel="WARNING"
    ) as session:
        assert session.logged_in_user == xnat_server.user
        assert session.get("/data/auth").text == f"User '{xnat_server.user}' is logged in"


def test_xnatpy_collaborator_reads_but_cannot_write(xnat_server, xnatpy, project):
    name = f"collab_{uuid.uuid4().hex[:6]}"
    xnat_server.add_user(name, "pw-collab", project, "Collaborator")
    xnatpy.classes.SubjectData(parent=xnatpy.projects[project], label="VISIBLE")
    with xnat.connect(
        xnat_server.url, user=name, password="pw-collab", loglevel="CRITICAL"
    ) as collaborator:
        proj = collaborator.projects[project]
        assert list(proj.subjects["VISIBLE"].experiments) == []
        with pytest.raises(xnat.exceptions.XNATResponseError, match="403"):
            collaborator.classes.SubjectData(parent=proj, label="NOT_ALLOWED")


def test_xnatpy_manages_membership_and_reports_access_levels(xnat_server, xnatpy, project):
    name = f"member_{uuid.uuid4().hex[:6]}"
    xnat_server.add_user(name, "pw-member")
    proj = xnatpy.projects[project]
    proj.set_access(name, "Members")
    assert proj.users[name].access_level == "Members"
    with xnat.connect(
        xnat_server.url, user=name, password="pw-member", loglevel="CRITICAL"
    ) as member:
        assert member.projects[project].access_level == "member"
    proj.remove_access(proj.users[name])  # xnatpy 0.8.1 needs the User object here
    proj.clearcache()
    assert name not in proj.users


def test_xnatpy_outsider_gets_403(xnat_server, project):
    name = f"outsider_{uuid.uuid4().hex[:6]}"
    xnat_server.add_user(name, "pw-out")
    with xnat.connect(
        xnat_server.url, user=name, password="pw-out", loglevel="CRITICAL"
    ) as outsider:
        assert project not in outsider.projects
        with pytest.raises(xnat.exceptions.XNATResponseError, match="403"):
            outsider.get(f"/data/projects/{project}/subjects")


def test_xnatpy_sees_data_after_a_restart(xnat_server, project):
    with xnat.connect(
        xnat_server.url, user=xnat_server.user, password=xnat_server.password, loglevel="WARNING"
    ) as before:
        subject = before.classes.SubjectData(parent=before.projects[project], label="PERSIST")
        subject_id = subject.id
    xnat_server.restart()
    with xnat.connect(
        xnat_server.url, user=xnat_server.user, password=xnat_server.password, loglevel="WARNING"
    ) as after:
        assert after.projects[project].subjects["PERSIST"].id == subject_id


@pytest.fixture
def pyxnat_interface(xnat_server):
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    interface = pyxnat.Interface(
        server=xnat_server.url, user=xnat_server.user, password=xnat_server.password
    )
    yield interface
    interface.disconnect()


def test_pyxnat_creates_lists_and_deletes(pyxnat_interface, project):
    proj = pyxnat_interface.select.project(project)
    assert proj.exists()
    subject = proj.subject("PYSUBJ")
    subject.create()
    session = subject.experiment("PYSESS")
    session.create(experiments="xnat:ctSessionData")
    session.scan("1").create(scans="xnat:ctScanData")
    assert session.exists()
    assert session.datatype() == "xnat:ctSessionData"
    assert proj.subjects().get() == [subject.id()]
    assert list(session.scans().get()) == ["1"]
    table = pyxnat_interface.array.experiments(
        project_id=project, experiment_type="xnat:ctSessionData", columns=["label"]
    )
    assert [(row["label"], row["subject_ID"]) for row in table] == [("PYSESS", subject.id())]
    session.delete()
    assert not session.exists()
    assert proj.experiments().get() == []


def test_pyxnat_creates_projects(pyxnat_interface, xnat_server):
    project_id = f"PYX_{uuid.uuid4().hex[:8]}"
    proj = pyxnat_interface.select.project(project_id)
    assert not proj.exists()
    proj.create()
    assert project_id in pyxnat_interface.select.projects().get()
    proj.delete()
    assert not proj.exists()


def test_pyxnat_wrong_password_is_refused(xnat_server):
    interface = pyxnat.Interface(server=xnat_server.url, user=xnat_server.user, password="not-it")
    # pyxnat's listings swallow errors (an empty list); its request layer shows the status
    assert interface.select.projects().get() == []
    with pytest.raises(pyxnat.core.errors.DatabaseError, match="status code: 401"):
        interface._exec("/data/projects?format=json", "GET")
