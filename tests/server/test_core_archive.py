"""The archive hierarchy over plain HTTP: creation, URL forms, listings, deletion, bad input."""

from __future__ import annotations

import re
import threading

import pytest
import requests


@pytest.fixture
def http(xnat_server) -> requests.Session:
    return xnat_server.session()


def _rows(reply: requests.Response) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return reply.json()["ResultSet"]["Result"]


def _make_session(
    http, url, project, subject="SUBJ1", label="SESS1", xsi="xnat:mrSessionData", **fields
) -> str:
    base = f"{url}/data/projects/{project}"
    http.put(f"{base}/subjects/{subject}")
    reply = http.put(
        f"{base}/subjects/{subject}/experiments/{label}", params={"xsiType": xsi, **fields}
    )
    assert reply.status_code in (200, 201), reply.text
    return reply.text


def test_creation_returns_xnat_accession_ids(xnat_server, http, project):
    base = f"{xnat_server.url}/data/projects/{project}"
    subject = http.put(f"{base}/subjects/SUBJ1", params={"gender": "female"})
    assert subject.status_code == 201
    assert re.fullmatch(r"XNAT_S\d{5}", subject.text)
    session = http.put(
        f"{base}/subjects/SUBJ1/experiments/SESS1",
        params={
            "xsiType": "xnat:mrSessionData",
            "req_format": "qs",
            "xnat:mrSessionData/date": "2024-03-05",
            "xnat:mrSessionData/scanner": "Prisma",
        },
    )
    assert session.status_code == 201
    assert re.fullmatch(r"XNAT_E\d{5}", session.text)
    again = http.put(f"{base}/subjects/SUBJ1")  # PUT on an existing object updates it
    assert (again.status_code, again.text) == (200, subject.text)

    item = http.get(f"{xnat_server.url}/data/experiments/{session.text}?format=json").json()
    fields = item["items"][0]["data_fields"]
    assert fields["label"] == "SESS1" and fields["date"] == "2024-03-05"
    assert fields["scanner"] == "Prisma" and fields["modality"] == "MR"
    assert fields["subject_ID"] == subject.text
    assert item["items"][0]["meta"]["xsi:type"] == "xnat:mrSessionData"
    assert item["items"][0]["meta"]["isHistory"] is False


def test_every_url_form_reaches_the_same_session(xnat_server, http, project):
    session_id = _make_session(http, xnat_server.url, project)
    subject_id = http.get(
        f"{xnat_server.url}/data/projects/{project}/subjects/SUBJ1?format=json"
    ).json()["items"][0]["data_fields"]["ID"]
    http.put(
        f"{xnat_server.url}/data/experiments/{session_id}/scans/3",
        params={"type": "T1w", "series_description": "t1 mprage", "xnat:mrScanData/UID": "1.2.3"},
    ).raise_for_status()
    forms = [
        f"/data/projects/{project}/subjects/SUBJ1/experiments/SESS1",
        f"/data/archive/projects/{project}/subjects/SUBJ1/experiments/SESS1",
        f"/data/projects/{project}/experiments/SESS1",
        f"/data/projects/{project}/experiments/{session_id}",
        f"/data/projects/{project}/subjects/{subject_id}/experiments/{session_id}",
        f"/data/experiments/{session_id}",
        f"/data/archive/experiments/{session_id}",
        f"/data/subjects/{subject_id}/experiments/SESS1",
    ]
    for form in forms:
        item = http.get(f"{xnat_server.url}{form}?format=json").json()
        assert item["items"][0]["data_fields"]["ID"] == session_id, form
        scans = _rows(http.get(f"{xnat_server.url}{form}/scans?format=json"))
        assert [(s["ID"], s["type"]) for s in scans] == [("3", "T1w")], form
    scan = http.get(f"{xnat_server.url}/data/experiments/{session_id}/scans/3?format=json").json()
    assert scan["items"][0]["data_fields"]["UID"] == "1.2.3"
    assert scan["items"][0]["meta"]["xsi:type"] == "xnat:mrScanData"


def test_a_session_under_another_subject_is_not_found(xnat_server, http, project):
    _make_session(http, xnat_server.url, project, subject="A", label="SA")
    http.put(f"{xnat_server.url}/data/projects/{project}/subjects/B").raise_for_status()
    reply = http.get(f"{xnat_server.url}/data/projects/{project}/subjects/B/experiments/SA")
    assert reply.status_code == 404


def test_listings_take_columns_filters_and_paging(xnat_server, http, project):
    for i in range(5):
        xsi = "xnat:mrSessionData" if i % 2 == 0 else "xnat:ctSessionData"
        _make_session(
            http,
            xnat_server.url,
            project,
            subject=f"S{i % 2}",
            label=f"E{i}",
            xsi=xsi,
            date=f"2024-01-0{i + 1}",
        )
    url = f"{xnat_server.url}/data/experiments"
    columns = "ID,label,xsiType,subject_label,xnat:mrSessionData/date,URI"
    rows = _rows(http.get(url, params={"project": project, "format": "json", "columns": columns}))
    assert [r["label"] for r in rows] == ["E0", "E1", "E2", "E3", "E4"]
    assert list(rows[0])[:6] == columns.split(",")
    assert rows[0]["xnat:mrSessionData/date"] == "2024-01-01"
    assert rows[1]["subject_label"] == "S1"

    mr = _rows(http.get(url, params={"project": project, "xsiType": "xnat:mrSessionData"}))
    assert [r["label"] for r in mr] == ["E0", "E2", "E4"]
    every_session = _rows(
        http.get(url, params={"project": project, "xsiType": "xnat:imageSessionData"})
    )
    assert len(every_session) == 5
    same = _rows(
        http.get(
            f"{xnat_server.url}/data/projects/{project}/experiments",
            params={"xsiType": "xnat:ctSessionData", "columns": "label"},
        )
    )
    assert [r["label"] for r in same] == ["E1", "E3"]

    paged = http.get(url, params={"project": project, "limit": 2, "offset": 1}).json()
    assert [r["label"] for r in paged["ResultSet"]["Result"]] == ["E1", "E2"]
    assert paged["ResultSet"]["totalRecords"] == "5"
    assert len(_rows(http.get(url, params={"project": project, "limit": "*"}))) == 5
    assert [
        r["label"] for r in _rows(http.get(url, params={"project": project, "label": "E3"}))
    ] == ["E3"]
    csv_text = http.get(
        url, params={"project": project, "format": "csv", "columns": "ID,label"}
    ).text
    assert csv_text.splitlines()[0] == "ID,label,URI"

    subjects = _rows(
        http.get(
            f"{xnat_server.url}/data/projects/{project}/subjects", params={"columns": "ID,label"}
        )
    )
    assert sorted(s["label"] for s in subjects) == ["S0", "S1"]


@pytest.mark.parametrize(
    "query, status",
    [
        ({"xsiType": "xnat:madeUpData"}, 400),
        ({"limit": "ten"}, 400),
        ({"offset": "-1"}, 400),
        ({"project": "NO_SUCH_PROJECT"}, 404),
    ],
)
def test_bad_listing_queries_are_4xx(xnat_server, http, query, status):
    reply = http.get(f"{xnat_server.url}/data/experiments", params=query)
    assert reply.status_code == status
    assert reply.text.count("\n") == 1 and "Traceback" not in reply.text


def test_scans_and_assessors_are_listed_under_their_session(xnat_server, http, project):
    session_id = _make_session(http, xnat_server.url, project, xsi="xnat:ctSessionData")
    base = f"{xnat_server.url}/data/experiments/{session_id}"
    http.put(f"{base}/scans/2", params={"type": "CT"}).raise_for_status()
    http.put(
        f"{base}/scans/1", params={"xsiType": "xnat:otherDicomScanData", "type": "RTSTRUCT"}
    ).raise_for_status()
    roi = http.put(
        f"{base}/assessors/ROI_1",
        params={
            "xsiType": "icr:roiCollectionData",
            "icr:roiCollectionData/collectionType": "RTSTRUCT",
            "icr:roiCollectionData/name": "Liver",
        },
    )
    assert roi.status_code == 201
    scans = _rows(http.get(f"{base}/scans", params={"columns": "ID,xsiType,type"}))
    assert [(s["ID"], s["xsiType"]) for s in scans] == [
        ("2", "xnat:ctScanData"),
        ("1", "xnat:otherDicomScanData"),
    ]
    rows = _rows(
        http.get(f"{base}/assessors", params={"columns": "ID,label,xsiType,collectionType,name"})
    )
    assert rows[0]["ID"] == roi.text
    assert (rows[0]["label"], rows[0]["collectionType"], rows[0]["name"]) == (
        "ROI_1",
        "RTSTRUCT",
        "Liver",
    )
    by_id = http.get(f"{xnat_server.url}/data/experiments/{roi.text}?format=json").json()
    assert by_id["items"][0]["meta"]["xsi:type"] == "icr:roiCollectionData"


def test_delete_cascades_and_removes_files(xnat_server, http, project):
    session_id = _make_session(http, xnat_server.url, project)
    http.put(f"{xnat_server.url}/data/experiments/{session_id}/scans/1").raise_for_status()
    folder = xnat_server.data_dir / "archive" / project / "experiments" / session_id
    (folder / "scans" / "1").mkdir(parents=True)
    (folder / "scans" / "1" / "left-over.dcm").write_bytes(b"x")

    subject_url = f"{xnat_server.url}/data/projects/{project}/subjects/SUBJ1"
    assert http.delete(subject_url).status_code == 200
    assert http.get(subject_url).status_code == 404
    assert http.get(f"{xnat_server.url}/data/experiments/{session_id}").status_code == 404
    assert not folder.exists()
    assert http.delete(subject_url).status_code == 404


def test_ids_are_never_reused_after_deletion(xnat_server, http, project):
    first = _make_session(http, xnat_server.url, project, label="FIRST")
    http.delete(f"{xnat_server.url}/data/experiments/{first}").raise_for_status()
    second = _make_session(http, xnat_server.url, project, label="FIRST")
    assert second != first


HOSTILE_LABELS = [
    "a" * 65,  # over-long
    "with space",
    "ünïcödé",
    "emoji_\U0001f600",
    "rtl_\u202eexe",
    "semi;colon",
    "quote'd",
    "new\nline",
    "trailing_newline\n",
    ".",
    "..",
    "back\\slash",
    "nul\x00byte",
]


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_hostile_labels_are_400_and_nothing_is_created(xnat_server, http, project, label):
    base = f"{xnat_server.url}/data/projects/{project}"
    quoted = requests.utils.quote(label, safe="")
    for url, params in [
        (f"{base}/subjects/{quoted}", {}),
        (f"{base}/subjects/OK/experiments/{quoted}", {"xsiType": "xnat:mrSessionData"}),
        (f"{xnat_server.url}/data/projects/{quoted}", {}),
    ]:
        http.put(f"{base}/subjects/OK")
        reply = http.put(url, params=params)
        assert 400 <= reply.status_code < 500, (label, url, reply.status_code, reply.text)
        assert "Traceback" not in reply.text
    assert [r["label"] for r in _rows(http.get(f"{base}/subjects"))] == ["OK"]
    assert http.get(f"{xnat_server.url}/xapi/siteConfig/buildInfo").status_code == 200


def test_duplicate_labels_conflict(xnat_server, http, project):
    base = f"{xnat_server.url}/data/projects/{project}"
    _make_session(http, xnat_server.url, project, subject="A", label="SAME")
    http.put(f"{base}/subjects/B").raise_for_status()
    reply = http.put(
        f"{base}/subjects/B/experiments/SAME", params={"xsiType": "xnat:mrSessionData"}
    )
    assert reply.status_code == 409
    assert "SAME" in reply.text and "already used" in reply.text
    renamed = http.put(f"{base}/subjects/B", params={"label": "A"})
    assert renamed.status_code == 409
    assert http.put(f"{xnat_server.url}/data/projects/{project.lower()}").status_code in (200, 409)


@pytest.mark.parametrize(
    "params, status",
    [
        ({"xsiType": "xnat:madeUpSessionData"}, 400),
        ({"xsiType": "xnat:mrScanData"}, 400),  # a scan type is no session type
        ({"xsiType": "<script>"}, 400),
        ({}, 400),  # sessions need a type
        ({"xsiType": "xnat:mrSessionData", "date": "yesterday"}, 400),
        ({"xsiType": "xnat:mrSessionData", "bad field!": "x"}, 400),
        ({"xsiType": "xnat:mrSessionData", "note": "x" * 5000}, 400),
    ],
)
def test_bad_session_fields_are_400(xnat_server, http, project, params, status):
    http.put(f"{xnat_server.url}/data/projects/{project}/subjects/S").raise_for_status()
    reply = http.put(
        f"{xnat_server.url}/data/projects/{project}/subjects/S/experiments/E", params=params
    )
    assert reply.status_code == status, reply.text
    assert reply.text.startswith(f"{status} ") and reply.text.count("\n") == 1


def test_moving_a_session_to_another_subject_conflicts(xnat_server, http, project):
    _make_session(http, xnat_server.url, project, subject="A", label="STAY")
    http.put(f"{xnat_server.url}/data/projects/{project}/subjects/B").raise_for_status()
    url = f"{xnat_server.url}/data/projects/{project}/experiments/STAY"
    assert http.put(url, params={"subject_ID": "B"}).status_code == 409
    assert http.put(url, params={"subject_ID": "A", "note": "kept"}).status_code == 200
    fields = http.get(url, params={"format": "json"}).json()["items"][0]["data_fields"]
    assert (fields["note"], "subject_label" in fields) == ("kept", False)


def test_changing_a_sessions_type_conflicts(xnat_server, http, project):
    _make_session(http, xnat_server.url, project)
    reply = http.put(
        f"{xnat_server.url}/data/projects/{project}/subjects/SUBJ1/experiments/SESS1",
        params={"xsiType": "xnat:ctSessionData"},
    )
    assert reply.status_code == 409


@pytest.mark.parametrize(
    "path",
    [
        "/data/projects/..%2F..%2Fetc/subjects",
        "/data/projects/%2e%2e/subjects/x",
        "/data/../../etc/passwd",
        "/data/projects/P/../../../etc/passwd",
        "/data/experiments/..%2Fsecret/scans",
        "/data/archive/../xnat-ml.sqlite",
        "/data/projects/x/subjects/y/experiments/z/scans/1/../../../../..",
    ],
)
def test_path_traversal_urls_are_4xx(xnat_server, http, path):
    reply = requests.Request("GET", f"{xnat_server.url}{path}", auth=http.auth).prepare()
    reply.url = f"{xnat_server.url}{path}"  # send the dots as written, unnormalised
    answer = http.send(reply)
    assert 400 <= answer.status_code < 500
    assert "SQLite" not in answer.text and "Traceback" not in answer.text
    assert http.get(f"{xnat_server.url}/xapi/siteConfig/buildInfo").status_code == 200


def test_concurrent_creations_all_succeed_with_distinct_ids(xnat_server, project):
    ids, errors = [], []

    def create(n: int) -> None:
        http = xnat_server.session()
        for k in range(5):
            reply = http.put(f"{xnat_server.url}/data/projects/{project}/subjects/T{n}_{k}")
            (ids if reply.status_code == 201 else errors).append(reply.text)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 30


def test_data_survive_a_restart(xnat_server, http, project):
    session_id = _make_session(http, xnat_server.url, project, label="KEEP")
    xnat_server.restart()
    http = xnat_server.session()
    item = http.get(f"{xnat_server.url}/data/experiments/{session_id}?format=json").json()
    assert item["items"][0]["data_fields"]["label"] == "KEEP"
    newer = _make_session(http, xnat_server.url, project, label="AFTER")
    assert int(newer.rsplit("E", 1)[1]) > int(session_id.rsplit("E", 1)[1])


def test_schemas_and_search_elements(xnat_server, http):
    names = http.get(f"{xnat_server.url}/xapi/schemas").json()
    assert {"xnat", "icr"} <= set(names)
    xsd = http.get(f"{xnat_server.url}/xapi/schemas/icr").text
    assert 'name="roiCollectionData"' in xsd
    assert http.get(f"{xnat_server.url}/xapi/schemas/..%2Fapp").status_code == 404
    elements = _rows(http.get(f"{xnat_server.url}/data/search/elements?format=json"))
    assert "xnat:mrSessionData" in [e["ELEMENT_NAME"] for e in elements]
    fields = _rows(http.get(f"{xnat_server.url}/data/search/elements/xnat:ctSessionData"))
    assert "LABEL" in [f["FIELD_ID"] for f in fields]


def test_project_ids_clash_ignoring_case_only(xnat_server, http):
    base = f"{xnat_server.url}/data/projects"
    assert http.put(f"{base}/CaseProj_AXB").status_code == 201
    assert http.put(f"{base}/caseproj_axb").status_code == 409
    assert http.put(f"{base}/CaseProj_A_B").status_code == 201  # '_' is no wildcard
    for project_id in ("CaseProj_AXB", "CaseProj_A_B"):
        assert http.delete(f"{base}/{project_id}").status_code == 200


def test_public_projects_are_readable_not_writable_by_everyone(xnat_server, http, project):
    name = f"public_reader_{project[-6:]}"
    xnat_server.add_user(name, "pw-public")
    reader = xnat_server.session(name, "pw-public")
    base = f"{xnat_server.url}/data/projects/{project}"
    assert reader.get(f"{base}/subjects").status_code == 403
    assert http.put(f"{base}/accessibility/public").status_code == 200
    assert http.get(f"{base}/accessibility").text == "public"
    assert reader.get(f"{base}/subjects").status_code == 200
    assert reader.put(f"{base}/subjects/NOPE").status_code == 403
    assert http.put(f"{base}/accessibility/everyone").status_code == 400
