"""Objects created from an XML document (`PUT ...?inbody=true`), as the Container Service's
Assessor and Scan output handlers do, and the XML the server refuses."""

from __future__ import annotations

import pytest
import requests

XNAT = 'xmlns:xnat="http://nrg.wustl.edu/xnat"'
ICR = 'xmlns:icr="http://www.icr.ac.uk/icr"'


@pytest.fixture
def session_uri(xnat_server, project) -> str:
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/subjects/S1"
    http.put(base).raise_for_status()
    made = http.put(f"{base}/experiments/MR1", params={"xsiType": "xnat:mrSessionData"})
    made.raise_for_status()
    return f"{xnat_server.url}/data/experiments/{made.text}"


def _rows(reply: requests.Response) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return reply.json()["ResultSet"]["Result"]


def test_an_assessor_and_a_scan_from_their_documents(xnat_server, session_uri):
    http = xnat_server.session()
    assessor = (
        f'<icr:roiCollectionData {ICR} {XNAT} ID="" label="auto_rois" project="ignored">'
        "<xnat:date>2024-05-17</xnat:date><icr:collectionType>RTSTRUCT</icr:collectionType>"
        "<icr:name>Liver (auto)</icr:name><xnat:provenance><xnat:note>x</xnat:note>"
        "</xnat:provenance></icr:roiCollectionData>"
    )
    made = http.put(f"{session_uri}/assessors/auto_rois", params={"inbody": "true"},
                    data=assessor.encode(), headers={"Content-Type": "text/xml"})  # fmt: skip
    assert made.status_code == 201, made.text
    columns = "ID,label,xsiType,collectionType,name,date"
    [row] = _rows(http.get(f"{session_uri}/assessors", params={"columns": columns}))
    assert row["ID"] == made.text
    assert (row["label"], row["xsiType"], row["collectionType"], row["name"], row["date"]) == (
        "auto_rois", "icr:roiCollectionData", "RTSTRUCT", "Liver (auto)", "2024-05-17",
    )  # fmt: skip

    scan = (
        f'<xnat:mrScanData {XNAT} ID="7" type="T1w">'
        "<xnat:series_description>t1_mprage</xnat:series_description></xnat:mrScanData>"
    )
    made = http.put(f"{session_uri}/scans/7", params={"inbody": "true"}, data=scan.encode())
    assert made.status_code == 201, made.text
    [row] = _rows(http.get(f"{session_uri}/scans",
                           params={"columns": "ID,xsiType,type,series_description"}))  # fmt: skip
    assert (row["ID"], row["xsiType"], row["type"], row["series_description"]) == (
        "7", "xnat:mrScanData", "T1w", "t1_mprage",
    )  # fmt: skip


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    f'<icr:roiCollectionData {ICR} label="a"><icr:name>&lol3;</icr:name></icr:roiCollectionData>'
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    f'<icr:roiCollectionData {ICR} label="a"><icr:name>&xxe;</icr:name></icr:roiCollectionData>'
)


@pytest.mark.parametrize(
    "body,message",
    [
        (LAUGHS.encode(), "XML document: not accepted"),
        (XXE.encode(), "XML document: not accepted"),
        (b"<unclosed", "XML document: not accepted"),
        (b"not xml at all", "XML document: not accepted"),
        (b"", "XML document: not accepted"),
        (b'<roiCollectionData label="a"/>', "is not in an XNAT schema namespace"),
        (f'<xnat:fooAssessmentData {XNAT} label="a"/>'.encode(), "is not supported here"),
        (f'<xnat:mrScanData {XNAT} ID="9"/>'.encode(), "is not supported here"),
        (f'<icr:roiCollectionData {ICR} label="a" bad-name!="1"/>'.encode(), "not accepted"),
        (f'<icr:roiCollectionData {ICR} label="a">'.encode() + b"<x>y</x>" * 200_000
         + b"</icr:roiCollectionData>", "larger than"),  # fmt: skip
    ],
    ids=["billion-laughs", "xxe", "unclosed", "text", "empty", "no-namespace", "unknown-type",
         "scan-as-assessor", "bad-attribute", "too-large"],  # fmt: skip
)
def test_hostile_or_wrong_documents_are_400_and_create_nothing(
    xnat_server, session_uri, body, message
):
    http = xnat_server.session()
    reply = http.put(f"{session_uri}/assessors/a", params={"inbody": "true"}, data=body)
    assert reply.status_code == 400, reply.text
    assert message in reply.text and reply.text.count("\n") == 1
    assert _rows(http.get(f"{session_uri}/assessors")) == []
