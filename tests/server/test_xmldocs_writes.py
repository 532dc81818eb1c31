"""Session documents written to the server as pyxnat's `create(xml=...)` (a multipart file) and
xnatpy's `put` (a text/xml body) send them: the subject is created on the way, the scans
listed are created, and hostile or unauthorised documents change nothing."""

from __future__ import annotations

import logging

import pytest
import pyxnat
import xnat
from lxml import etree

SESSION_XML = """<?xml version="1.0" encoding="UTF-8"?>
<xnat:MRSession xmlns:xnat="http://nrg.wustl.edu/xnat"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="" project="elsewhere" label="x">
  <xnat:date>2010-01-02</xnat:date>
  <xnat:fields><xnat:field name="visit">baseline</xnat:field></xnat:fields>
  <xnat:subject_ID>ignored</xnat:subject_ID>
  <xnat:age>61</xnat:age>
  <xnat:resources><xnat:resource label="R" URI="/etc/hosts"><xnat:file_count>1</xnat:file_count>
  </xnat:resource></xnat:resources>
  <xnat:modality>MR</xnat:modality>
  <xnat:scans>
    <xnat:scan xsi:type="xnat:mrScanData" ID="1" type="T1">
      <xnat:series_description>MPRAGE</xnat:series_description>
      <xnat:quality>usable</xnat:quality>
      <xnat:file xsi:type="xnat:resourceCatalog" label="DICOM" URI="/etc/passwd">
        <xnat:file_count>3</xnat:file_count></xnat:file>
    </xnat:scan>
  </xnat:scans>
</xnat:MRSession>
"""
NS = {"xnat": "http://nrg.wustl.edu/xnat"}


def _pyxnat(xnat_server, user=None, password=None) -> pyxnat.Interface:
    logging.getLogger("pyxnat").setLevel(logging.CRITICAL)
    return pyxnat.Interface(server=xnat_server.url, user=user or xnat_server.user,
                            password=password or xnat_server.password)  # fmt: skip


def _session_document(http, url: str) -> etree._Element:
    reply = http.get(url, params={"format": "xml"})
    assert reply.status_code == 200, reply.text
    return etree.fromstring(reply.content)


def test_pyxnat_create_xml_builds_subject_session_and_scans(xnat_server, project, tmp_path):
    document = tmp_path / "session.xml"
    # pyxnat parses the file as text, which lxml refuses with an encoding declaration
    document.write_text(SESSION_XML.split("\n", 1)[1])
    central = _pyxnat(xnat_server)
    experiment = central.select.project(project).subject("SX").experiment("EX")
    experiment.create(xml=str(document))
    assert central.select.project(project).subject("SX").exists()
    assert experiment.exists() and experiment.label() == "EX"
    assert experiment.attrs.mget(["xnat:mrSessionData/date", "xnat:mrSessionData/age"]) == [
        "2010-01-02", "61.0"]  # fmt: skip
    assert experiment.xpath("//xnat:field[@name='visit']/text()") == ["baseline"]
    [scan] = experiment.scans().get()
    assert scan == "1" and experiment.scan("1").attrs.get("xnat:mrScanData/type") == "T1"
    central.disconnect()

    http = xnat_server.session()
    root = _session_document(http, f"{xnat_server.url}/data/projects/{project}/experiments/EX")
    assert root.get("project") == project
    assert root.xpath("xnat:scans/xnat:scan/xnat:series_description/text()", namespaces=NS) == [
        "MPRAGE"]  # fmt: skip
    # the document's resources and files are not read: no resource, no stray fields
    session = f"{xnat_server.url}/data/projects/{project}/experiments/EX"
    assert http.get(f"{session}/resources").json()["ResultSet"]["Result"] == []
    assert http.get(f"{session}/scans/1/resources").json()["ResultSet"]["Result"] == []
    for uri in (session, f"{session}/scans/1"):
        fields = http.get(uri).json()["items"][0]["data_fields"]
        assert not [key for key in fields if key.lower().startswith(("file", "resources"))]


def test_xnatpy_puts_a_document_back_as_a_new_session(xnat_server, project):
    """A document the server wrote, sent back (text/xml body) under another label: the same
    session, subject created on the way."""
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/subjects"
    made = http.put(f"{base}/A/experiments/E1", data=SESSION_XML.encode(),
                    headers={"Content-Type": "text/xml"})  # fmt: skip
    assert made.status_code == 201, made.text
    written = etree.tostring(_session_document(http, f"{base}/A/experiments/{made.text}"))
    with xnat.connect(xnat_server.url, user=xnat_server.user, password=xnat_server.password,
                      loglevel="CRITICAL") as session:  # fmt: skip
        session.put(f"/data/projects/{project}/subjects/B/experiments/E2", data=written,
                    headers={"Content-Type": "text/xml"})  # fmt: skip
        session.clearcache()
        copy = session.projects[project].subjects["B"].experiments["E2"]
        assert (str(copy.date), copy.scans["1"].type) == ("2010-01-02", "T1")
    first = _session_document(http, f"{xnat_server.url}/data/projects/{project}/experiments/E1")
    second = _session_document(http, f"{xnat_server.url}/data/projects/{project}/experiments/E2")
    for root in (first, second):
        for volatile in ("ID", "label"):
            del root.attrib[volatile]
        for own_id in root.xpath("xnat:subject_ID | .//xnat:image_session_ID", namespaces=NS):
            own_id.getparent().remove(own_id)
    assert etree.tostring(first) == etree.tostring(second)


DEEP = ("<xnat:MRSession xmlns:xnat='http://nrg.wustl.edu/xnat'>" + "<xnat:a>" * 50
        + "x" + "</xnat:a>" * 50 + "</xnat:MRSession>")  # fmt: skip
XXE = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
       "<xnat:MRSession xmlns:xnat='http://nrg.wustl.edu/xnat'><xnat:note>&e;</xnat:note>"
       "</xnat:MRSession>")  # fmt: skip


@pytest.mark.parametrize(
    "body,message",
    [(DEEP, "nested deeper than"), (XXE, "not accepted"),
     ("<xnat:Unknown xmlns:xnat='http://nrg.wustl.edu/xnat'/>", "is not supported here"),
     (SESSION_XML.replace('ID="1"', 'ID="../1"'), "Scan label")],
    ids=["deep", "xxe", "unknown-type", "bad-scan-id"],
)  # fmt: skip
def test_hostile_documents_are_400_and_create_no_subject(xnat_server, project, body, message):
    http = xnat_server.session()
    url = f"{xnat_server.url}/data/projects/{project}/subjects/NEW/experiments/E"
    reply = http.put(url, files={"data.xml": ("data.xml", body.encode(), "text/xml")})
    assert reply.status_code == 400 and message in reply.text, reply.text
    assert reply.text.count("\n") == 1
    subjects = http.get(f"{xnat_server.url}/data/projects/{project}/subjects").json()
    assert subjects["ResultSet"]["Result"] == []


def test_a_collaborator_cannot_create_from_a_document(xnat_server, project, tmp_path):
    xnat_server.add_user("xmldocs_wcollab", "pw-xmldocs-w", project, "Collaborator")
    document = tmp_path / "session.xml"
    document.write_text(SESSION_XML.split("\n", 1)[1])
    central = _pyxnat(xnat_server, "xmldocs_wcollab", "pw-xmldocs-w")
    with pytest.raises(pyxnat.core.errors.DatabaseError, match="403"):
        central.select.project(project).subject("SX").experiment("EX").create(xml=str(document))
    central.disconnect()
    http = xnat_server.session()
    subjects = http.get(f"{xnat_server.url}/data/projects/{project}/subjects").json()
    assert subjects["ResultSet"]["Result"] == []
