"""The listings and zips a dataset build asks for (`projects/P/experiments/ALL/{scans,assessors}/
ALL/{resources,files}`, `experiments/E1,E2/.../files?format=zip`): their SQL statements do not
grow with the sessions (they did, one to three per row), and they answer what XNAT would, the
caller's project role checked per session."""

from __future__ import annotations

import io
import threading
import zipfile

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from xnat_ml.server.app import create_app

pytestmark = pytest.mark.timeout(300)
BASIC = {"Authorization": "Basic YWRtaW46YWRtaW4="}  # admin:admin


def _add(put, base: str, index: int) -> str:
    """Session L{index} (scan 1 with NIFTI/image.nii.gz, assessor R{index} with LABELMAP/
    labels.nii.gz) below `base` (a /data/projects/P URI); its accession ID."""
    put(f"{base}/subjects/S{index}")
    session = put(f"{base}/subjects/S{index}/experiments/L{index}",
                  xsiType="xnat:mrSessionData").strip()  # fmt: skip
    uri = f"/data/experiments/{session}"
    put(f"{uri}/scans/1", xsiType="xnat:mrScanData", type="T1w")
    put(f"{uri}/scans/1/resources/NIFTI/files/image.nii.gz", data=b"image %d" % index)
    put(f"{uri}/assessors/R{index}", xsiType="icr:roiCollectionData")
    put(f"{uri}/assessors/R{index}/resources/LABELMAP/files/labels.nii.gz",
        data=b"labels %d" % index)  # fmt: skip
    return session


def test_bulk_listings_cost_the_same_statements_for_more_sessions(tmp_path):
    client = create_app(tmp_path).test_client()

    def put(uri: str, data: bytes = b"", **query) -> str:
        reply = client.put(uri, query_string=query, data=data, headers=BASIC)
        assert reply.status_code in (200, 201), (uri, reply.status_code)
        return reply.get_data(as_text=True)

    def cost(uri: str, **query) -> tuple[int, int]:
        """(SQL statements, rows or zip members) of a GET. The test client serves it on this
        thread; the event worker's statements, on its own thread, are not the request's."""
        count, caller = 0, threading.get_ident()

        def counted(*args, **kwargs) -> None:
            nonlocal count
            count += threading.get_ident() == caller

        event.listen(Engine, "before_cursor_execute", counted)
        try:
            reply = client.get(uri, query_string=query, headers=BASIC)
            body = reply.get_data()  # a zip streams: its statements run while it is read
        finally:
            event.remove(Engine, "before_cursor_execute", counted)
        assert reply.status_code == 200, (uri, reply.status_code)
        if query.get("format") == "zip":
            return count, len(zipfile.ZipFile(io.BytesIO(body)).namelist())
        return count, len(reply.get_json()["ResultSet"]["Result"])

    put("/data/projects/P")
    ids = [_add(put, "/data/projects/P", i) for i in range(2)]

    def costs() -> list[tuple[int, int]]:
        wide = "/data/projects/P/experiments/ALL"
        labels = ",".join(f"L{i}" for i in range(len(ids)))
        return [
            cost(f"{wide}/scans/ALL/resources", format="json"),
            cost(f"{wide}/scans/ALL/files", format="json"),
            cost(f"{wide}/assessors/ALL/files", format="json"),
            cost(f"/data/experiments/{','.join(ids)}/assessors/ALL/resources/LABELMAP/files",
                 format="zip"),  # fmt: skip
            cost(f"/data/projects/P/experiments/{labels}/scans/ALL/files", format="json"),
        ]

    few = costs()
    ids += [_add(put, "/data/projects/P", i) for i in range(2, 8)]
    many = costs()
    assert [rows for _, rows in few] == [2] * 5 and [rows for _, rows in many] == [8] * 5
    assert [n for n, _ in many] == [n for n, _ in few]


def test_several_sessions_by_id_or_label_leave_out_what_the_caller_may_not_read(
    xnat_server, project
):
    admin = xnat_server.session()

    def put(uri: str, data: bytes = b"", **query) -> str:
        reply = admin.put(f"{xnat_server.url}{uri}", params=query, data=data)
        reply.raise_for_status()
        return reply.text

    other = f"{project}_X"
    put(f"/data/projects/{other}")
    mine = [_add(put, f"/data/projects/{project}", i) for i in range(2)]
    theirs = _add(put, f"/data/projects/{other}", 9)
    xnat_server.add_user(f"{project}_c", "pw-c", project, "Collaborator")
    reader = xnat_server.session(f"{project}_c", "pw-c")

    def paths(uri: str) -> list[str]:
        reply = reader.get(f"{xnat_server.url}{uri}", params={"format": "json"})
        reply.raise_for_status()
        return sorted(row["URI"].split("/data/experiments/")[1]
                      for row in reply.json()["ResultSet"]["Result"])  # fmt: skip

    expected = [f"{e}/scans/1/resources/NIFTI/files/image.nii.gz" for e in mine]
    # by accession ID at the top level: a session of a project the reader is not in, and one
    # that does not exist, are left out (as XNAT does for a GET), not a 403 or 404
    assert paths(f"/data/experiments/{mine[0]},{theirs},NOSUCH,{mine[1]}/scans/ALL/files") == (
        expected
    )
    # by label (or ID) below a project
    assert paths(f"/data/projects/{project}/experiments/L0,{mine[1]},L9/scans/ALL/files") == (
        expected
    )
    # below a project the reader may not read: nothing, whatever it holds
    assert paths(f"/data/projects/{other}/experiments/L9,{theirs}/scans/ALL/files") == []
    # one resource by label, or by its id, of several objects
    resources = reader.get(f"{xnat_server.url}/data/experiments/{mine[0]}/scans/1/resources",
                           params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    pk = resources[0]["xnat_abstractresource_id"]
    assert paths(f"/data/experiments/{mine[0]}/scans/1/resources/{pk}/files") == expected[:1]
    assert paths(f"/data/experiments/{','.join(mine)}/scans/1/resources/NOPE,NIFTI/files") == (
        expected
    )
