"""Listing columns as XNAT gives them: stored nested fields as xpath columns, ID and URI in
every row, insert_date and last_modified filled, numbers in XNAT's form, and fields that
pyxnat can discover from search/elements."""

from __future__ import annotations

import logging
import time

import pyxnat


def _rows(http, url: str, **params) -> list[dict]:
    reply = http.get(url, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()["ResultSet"]["Result"]


def test_xpath_columns_id_uri_and_dates(xnat_server, project):
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/subjects"
    http.put(f"{base}/S1", params={"xnat:subjectData/investigator/firstname": "john",
                                   "xnat:subjectData/fields/field[name=site]/field": "leeds"}
             ).raise_for_status()  # fmt: skip
    made = http.put(f"{base}/S1/experiments/E1",
                    params={"xsiType": "xnat:mrSessionData", "xnat:mrSessionData/age": "42"})
    made.raise_for_status()
    columns = ("xnat:subjectData/investigator/firstname,"
               "xnat:subjectData/fields/field[name=site]/field")  # fmt: skip
    [row] = _rows(http, base, columns=columns)
    assert row["xnat:subjectData/investigator/firstname"] == "john"
    assert row["xnat:subjectData/fields/field[name=site]/field"] == "leeds"
    assert row["ID"] and row["URI"].endswith(f"/subjects/{row['ID']}")

    experiments = f"{xnat_server.url}/data/projects/{project}/experiments"
    [row] = _rows(http, experiments, columns="xnat:mrSessionData/age,insert_date,last_modified")
    assert row["xnat:mrSessionData/age"] == "42.0" and row["ID"] == made.text
    assert row["insert_date"] and row["last_modified"] == row["insert_date"]
    time.sleep(0.01)
    http.put(f"{xnat_server.url}/data/experiments/{made.text}",
             params={"xnat:mrSessionData/age": "43.5"}).raise_for_status()  # fmt: skip
    [after] = _rows(http, experiments, columns="age,last_modified", format="json")
    assert after["age"] == "43.5" and after["last_modified"] > row["last_modified"]
    csv = http.get(experiments, params={"columns": "label", "format": "csv"}).text
    assert csv.splitlines()[0] == "label,ID,URI"


def test_pyxnat_discovers_the_stored_fields(xnat_server, project):
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    central = pyxnat.Interface(server=xnat_server.url, user=xnat_server.user,
                               password=xnat_server.password)  # fmt: skip
    fields = central.inspect.datatypes("xnat:subjectData")
    assert "xnat:subjectData/SUBJECT_LABEL" in fields  # the search fields stay
    assert "xnat:subjectData/INVESTIGATOR_FIRSTNAME" in fields  # and the XSD's
    session_fields = central.inspect.datatypes("xnat:mrSessionData")
    assert {"xnat:mrSessionData/AGE", "xnat:mrSessionData/FIELDSTRENGTH"} <= set(session_fields)
    assert "xnat:qcAssessmentData/RATER" in central.inspect.datatypes("xnat:qcAssessmentData")
    # a discovered field is a listing column
    subject = central.select.project(project).subject("S1")
    subject.create(**{"xnat:subjectData/investigator/firstname": "ada"})
    assert subject.attrs.get("xnat:subjectData/INVESTIGATOR_FIRSTNAME") == "ada"
    central.disconnect()
    http = xnat_server.session()
    rows = _rows(http, f"{xnat_server.url}/data/search/elements/xnat:mrSessionData")
    types = {row["FIELD_ID"]: row["TYPE"] for row in rows}
    assert (types["AGE"], types["DATE"], types["LABEL"]) == ("float", "date", "string")
