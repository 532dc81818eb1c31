"""XNAT's search service on the embedded server, driven by unmodified pyxnat and xnatpy:
`POST /data/search` (JSON and CSV), criteria nesting and operators, hostile documents, two
users who must not see each other's rows, and saved searches per user."""

from __future__ import annotations

import csv
import io
import logging

import pytest
import pyxnat
import pyxnat.core.errors
import xnat
from pyxnat.core.search import build_search_document

MEMBER, MEMBER_PASSWORD = "search_member", "search-member-pw"
OTHER, OTHER_PASSWORD = "search_other", "search-other-pw"


@pytest.fixture(scope="module")
def searched(xnat_server):
    """Two projects: SRCH_A (three MR, one CT session) where MEMBER is a Member, SRCH_B (one MR
    session) that MEMBER cannot read; OTHER reads neither."""
    http = xnat_server.session()
    url = xnat_server.url
    sessions = {
        "SRCH_A": [("A1", "MRA1", "mr", "2024-01-10"), ("A1", "MRA2", "mr", "2024-06-01"),
                   ("A2", "MRA3", "mr", ""), ("A2", "CTA1", "ct", "2024-02-02")],
        "SRCH_B": [("B1", "MRB1", "mr", "2024-01-11")],
    }  # fmt: skip
    for project, rows in sessions.items():
        http.put(f"{url}/data/projects/{project}").raise_for_status()
        for subject, label, kind, date in rows:
            http.put(f"{url}/data/projects/{project}/subjects/{subject}").raise_for_status()
            http.put(
                f"{url}/data/projects/{project}/subjects/{subject}/experiments/{label}",
                params={"xsiType": f"xnat:{kind}SessionData", "date": date},
            ).raise_for_status()
    session_url = f"{url}/data/projects/SRCH_A/subjects/A1/experiments/MRA1"
    for scan, scan_type in (("3", "T1w"), ("4", "T2w")):
        http.put(f"{session_url}/scans/{scan}",
                 params={"xsiType": "xnat:mrScanData", "type": scan_type}).raise_for_status()
    http.put(f"{session_url}/assessors/ROI1", params={"xsiType": "icr:roiCollectionData",
             "icr:roiCollectionData/name": "liver"}).raise_for_status()  # fmt: skip
    xnat_server.add_user(MEMBER, MEMBER_PASSWORD, "SRCH_A", "Member")
    xnat_server.add_user(OTHER, OTHER_PASSWORD)
    yield xnat_server
    for project in sessions:
        http.delete(f"{url}/data/projects/{project}")


def _pyxnat(server, user=None, password=None) -> pyxnat.Interface:
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    return pyxnat.Interface(
        server=server.url, user=user or server.user, password=password or server.password
    )


def _post(server, document: bytes, fmt="json", user=None, password=None):
    http = server.session(user, password)
    return http.post(f"{server.url}/data/search", params={"format": fmt}, data=document)


def _labels(table) -> set[str]:
    return {row["label"] for row in table}


def test_pyxnat_where_returns_the_matching_rows(searched):
    interface = _pyxnat(searched)
    columns = ["xnat:mrSessionData/LABEL", "xnat:mrSessionData/DATE", "xnat:subjectData/LABEL"]
    table = interface.select("xnat:mrSessionData", columns).where(
        [("xnat:mrSessionData/PROJECT", "=", "SRCH_A"), ("xnat:mrSessionData/DATE", ">=",
         "2024-01-01"), "AND"]  # fmt: skip
    )
    assert _labels(table) == {"MRA1", "MRA2"}  # CTA1 is no MR session, MRA3 has no date
    assert {row["date"] for row in table} == {"2024-01-10", "2024-06-01"}
    # nested OR inside AND, LIKE with pyxnat's * wildcard, and IS NULL
    table = interface.select("xnat:imageSessionData", ["xnat:imageSessionData/LABEL"]).where(
        [("xnat:projectData/ID", "=", "SRCH_A"),
         [("xnat:imageSessionData/LABEL", "LIKE", "CT*"),
          ("xnat:imageSessionData/DATE", "IS NULL", ""), "OR"], "AND"]  # fmt: skip
    )
    assert _labels(table) == {"CTA1", "MRA3"}
    values = interface.inspect.field_values("xnat:mrSessionData/LABEL")
    assert {"MRA1", "MRA2", "MRA3", "MRB1"} <= set(values)


def test_xnatpy_query_returns_objects(searched):
    with xnat.connect(searched.url, user=searched.user, password=searched.password,
                      loglevel="WARNING") as session:  # fmt: skip
        mr = session.classes.MrSessionData
        found = mr.query().filter(mr.project == "SRCH_A").filter(mr.label.like("MRA%")).all()
        assert sorted(e.label for e in found) == ["MRA1", "MRA2", "MRA3"]
        early = mr.query(mr.project == "SRCH_A", mr.date < "2024-03-01").all()
        assert [e.label for e in early] == ["MRA1"]
        subjects = session.classes.SubjectData
        found = subjects.query().filter(subjects.label == "A2").all()
        assert [(s.label, s.project) for s in found] == [("A2", "SRCH_A")]


def test_json_and_csv_carry_the_same_rows_and_operators_compare(searched):
    document = build_search_document(
        "xnat:subjectData",
        ["xnat:subjectData/SUBJECT_LABEL", "xnat:subjectData/PROJECT", "xnat:projectData/ID"],
        [("xnat:subjectData/PROJECT", "!=", "SRCH_B"), ("xnat:subjectData/LABEL", "<", "A2"),
         ("xnat:subjectData/LABEL", "<=", "A1"), ("xnat:projectData/ID", "LIKE", "SRCH%"),
         ("xnat:subjectData/LABEL", ">", "A0"), ("xnat:subjectData/LABEL", "IS NOT NULL", ""),
         "AND"],  # fmt: skip
    )
    as_json = _post(searched, document).json()["ResultSet"]
    assert as_json["Result"] == [
        {"subject_label": "A1", "project": "SRCH_A", "xnat_projectdata_id": "SRCH_A"}
    ]
    as_csv = list(csv.DictReader(io.StringIO(_post(searched, document, "csv").text)))
    assert as_csv == as_json["Result"]


def test_a_field_listed_by_search_elements_can_be_searched_on(searched):
    """search/elements names stored nested fields by ID (INVESTIGATOR_FIRSTNAME): a client that
    found one there gets rows when it searches on it, as on its xpath."""
    http, url = searched.session(), searched.url
    http.put(f"{url}/data/projects/SRCH_A/subjects/A2",
             params={"xnat:subjectData/investigator/firstname": "Ann"}).raise_for_status()
    listed = http.get(f"{url}/data/search/elements/xnat:subjectData", params={"format": "json"})
    assert "INVESTIGATOR_FIRSTNAME" in {r["FIELD_ID"] for r in listed.json()["ResultSet"]["Result"]}
    for field in ("INVESTIGATOR_FIRSTNAME", "investigator/firstname"):
        document = build_search_document(
            "xnat:subjectData", ["xnat:subjectData/SUBJECT_LABEL"],
            [(f"xnat:subjectData/{field}", "=", "Ann"), "AND"])  # fmt: skip
        assert _post(searched, document).json()["ResultSet"]["Result"] == [
            {"subject_label": "A2"}], field  # fmt: skip


def test_scans_and_roi_collections_are_searched_with_their_session(searched):
    scans = build_search_document(
        "xnat:mrScanData", ["xnat:mrScanData/ID", "xnat:mrSessionData/LABEL"],
        [("xnat:mrScanData/TYPE", "LIKE", "T1%"), ("xnat:projectData/ID", "=", "SRCH_A"), "AND"],
    )  # fmt: skip
    rows = _post(searched, scans).json()["ResultSet"]["Result"]
    assert rows == [{"id": "3", "xnat_mrsessiondata_label": "MRA1"}]
    rois = build_search_document(
        "icr:roiCollectionData", ["icr:roiCollectionData/LABEL", "icr:roiCollectionData/name"],
        [("icr:roiCollectionData/name", "=", "liver"), "AND"],
    )  # fmt: skip
    rows = _post(searched, rois).json()["ResultSet"]["Result"]
    assert rows == [{"label": "ROI1", "name": "liver"}]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
         b"<b>&x;</b>", "DTDs and entities are not allowed"),
        (b'<!DOCTYPE b [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><b>&b;</b>',
         "DTDs and entities are not allowed"),
        (b"<xdat:bundle xmlns:xdat='http://nrg.wustl.edu/security'><xdat:root_element_name>"
         b"xnat:subjectData</xdat:root_element_name><xdat:search_where>"
         + b"<xdat:child_set>" * 40 + b"</xdat:child_set>" * 40 + b"</xdat:search_where>"
         b"</xdat:bundle>", "nested deeper than 16"),
        (build_search_document("xnat:subjectData", ["xnat:subjectData/SHOE_SIZE"], []),
         "xnat:subjectData has no field 'SHOE_SIZE'"),
        (build_search_document("xnat:subjectData", [], [("xnat:subjectData/x')--", "=", "1")]),
         "xnat:subjectData has no field"),
        (build_search_document("xnat:fooData", [], []), "'xnat:fooData' is not one"),
        (build_search_document("xnat:subjectData", ["xnat:mrSessionData/LABEL"], []),
         "cannot be shown or searched in a xnat:subjectData search"),
        (build_search_document("xnat:mrSessionData", [],
                               [("xnat:mrSessionData/DATE", "~", "1")]), "is not one of"),
        (build_search_document("xnat:mrSessionData", [],
                               [("xnat:mrSessionData/DATE", ">", "soon")]), "compares dates"),
        (b"<bundle", "not well-formed"),
    ],
    ids=["xxe", "laughs", "deep", "unknown-field", "injection", "unknown-type", "downward",
         "operator", "date", "broken"],  # fmt: skip
)
def test_hostile_or_wrong_documents_get_a_400_naming_the_problem(searched, document, problem):
    response = _post(searched, document)
    assert response.status_code == 400, response.text
    assert problem in response.text and "Traceback" not in response.text


def test_a_search_never_shows_rows_of_projects_the_user_cannot_read(searched):
    everything = build_search_document(
        "xnat:mrSessionData", ["xnat:mrSessionData/LABEL", "xnat:mrSessionData/PROJECT"],
        [("xnat:mrSessionData/ID", "LIKE", "%"), "AND"],
    )  # fmt: skip
    admin_rows = _post(searched, everything).json()["ResultSet"]["Result"]
    assert {"MRA1", "MRB1"} <= _labels(admin_rows)
    member_rows = _post(searched, everything, user=MEMBER, password=MEMBER_PASSWORD).json()
    assert _labels(member_rows["ResultSet"]["Result"]) == {"MRA1", "MRA2", "MRA3"}
    asks_for_b = build_search_document(
        "xnat:mrSessionData", [], [("xnat:mrSessionData/PROJECT", "=", "SRCH_B"), "AND"]
    )
    other = _post(searched, asks_for_b, "csv", OTHER, OTHER_PASSWORD)
    assert other.status_code == 200 and other.text.strip().count("\n") == 0  # header only


def test_saved_searches_are_per_user(searched):
    member = _pyxnat(searched, MEMBER, MEMBER_PASSWORD)
    columns = ["xnat:mrSessionData/LABEL", "xnat:mrSessionData/PROJECT"]
    member.manage.search.save("search_mr", "xnat:mrSessionData", columns,
                              [("xnat:mrSessionData/LABEL", "LIKE", "MR%"), "AND"])  # fmt: skip
    assert "search_mr" in member.manage.search.saved()
    assert _labels(member.manage.search.get("search_mr")) == {"MRA1", "MRA2", "MRA3"}
    query = member.manage.search.get("search_mr", "query")
    assert query["row"] == "xnat:mrSessionData" and query["columns"] == columns
    # another user neither lists, reads, runs, replaces nor deletes it
    other = searched.session(OTHER, OTHER_PASSWORD)
    url = f"{searched.url}/data/search/saved/search_mr"
    listed = other.get(f"{searched.url}/data/search/saved", params={"format": "json"}).json()
    assert "search_mr" not in [r["id"] for r in listed["ResultSet"]["Result"]]
    assert other.get(url).status_code == 404
    assert other.get(f"{url}/results").status_code == 404
    assert other.delete(url).status_code == 404
    assert other.put(url, params={"inbody": "true"}, data=build_search_document(
        "xnat:subjectData", [], [])).status_code == 403  # fmt: skip
    # the admin runs it with the admin's access: MRB1 too
    admin = _pyxnat(searched)
    assert "MRB1" in _labels(admin.manage.search.get("search_mr"))
    broken = searched.session(MEMBER, MEMBER_PASSWORD).put(
        f"{searched.url}/data/search/saved/search_bad", params={"inbody": "true"},
        data=build_search_document("xnat:subjectData", ["xnat:subjectData/NOPE"], []),
    )  # fmt: skip
    assert broken.status_code == 400 and "NOPE" in broken.text
    member.manage.search.delete("search_mr")
    assert "search_mr" not in member.manage.search.saved()
    with pytest.raises(pyxnat.core.errors.DatabaseError):
        member.manage.search.get("search_mr")
