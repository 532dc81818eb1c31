"""XML documents read back (`format=xml`), pyxnat's `attrs` and `xpath`, and custom fields,
with unmodified pyxnat and xnatpy; every document is validated against the XSDs the server
serves."""

from __future__ import annotations

import logging

import pytest
import pyxnat
import requests
import xnat
from lxml import etree

XNAT_NS = "http://nrg.wustl.edu/xnat"
NS = {"xnat": XNAT_NS, "icr": "http://www.icr.ac.uk/icr"}


@pytest.fixture(scope="module")
def served_schema(xnat_server, tmp_path_factory) -> etree.XMLSchema:
    """Both served XSDs as one lxml schema (icr.xsd imports ../xnat/xnat.xsd)."""
    http = xnat_server.session()
    folder = tmp_path_factory.mktemp("xsd")
    for name in ("xnat", "icr"):
        (folder / name).mkdir()
        reply = http.get(f"{xnat_server.url}/xapi/schemas/{name}")
        reply.raise_for_status()
        (folder / name / f"{name}.xsd").write_bytes(reply.content)
    return etree.XMLSchema(etree.parse(str(folder / "icr" / "icr.xsd")))


@pytest.fixture
def central(xnat_server):
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    interface = pyxnat.Interface(
        server=xnat_server.url, user=xnat_server.user, password=xnat_server.password
    )
    yield interface
    interface.disconnect()


def _document(http: requests.Session, uri: str, schema: etree.XMLSchema) -> etree._Element:
    reply = http.get(uri, params={"format": "xml"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(reply.content)
    schema.assertValid(root)
    return root


def test_pyxnat_attrs_round_trip_as_in_its_own_tests(central, project):
    """pyxnat's attributes_test: fields set at creation (the subject's on the way), read as
    columns (decimals in XNAT's form), set again; custom fields as pyxnat sets them."""
    subject = central.select.project(project).subject("sid1")
    experiment = subject.experiment("eid1")
    experiment.create(**{
        "experiment": "xnat:mrSessionData",
        "xnat:mrSessionData/age": "42",
        "xnat:subjectData/investigator/lastname": "doe",
        "xnat:subjectData/investigator/firstname": "john",
    })  # fmt: skip
    assert subject.exists() and experiment.exists()
    assert experiment.attrs.get("xnat:mrSessionData/age") == "42.0"
    fields = ["xnat:subjectData/investigator/firstname", "xnat:subjectData/investigator/lastname"]
    assert subject.attrs.mget(fields) == ["john", "doe"]
    experiment.attrs.set("xnat:mrSessionData/age", "26")
    assert experiment.attrs.get("xnat:mrSessionData/age") == "26.0"

    custom = "xnat:subjectData/fields/field[name=site]/field"
    subject.attrs.set(custom, "Leeds & York")
    assert subject.attrs.get(custom) == "Leeds & York"
    assert subject.xpath("//xnat:field[@name='site']/text()") == ["Leeds & York"]
    assert subject.xpath("//xnat:investigator/xnat:firstname/text()") == ["john"]
    assert experiment.xpath("//xnat:age/text()") == ["26.0"]
    experiment.attrs.mset({"xnat:mrSessionData/fields/field[name=visit]/field": "V2"})
    assert experiment.attrs.get("xnat:mrSessionData/fields/field[name=visit]/field") == "V2"


def test_documents_of_every_kind_are_valid_and_shaped_like_xnat(
    xnat_server, project, served_schema
):
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}"
    http.put(base, params={"xnat:projectData/PI/firstname": "Ada", "description": "d"})
    http.put(f"{base}/subjects/S1", params={"group": "control"}).raise_for_status()
    made = http.put(f"{base}/subjects/S1/experiments/MR1",
                    params={"xsiType": "xnat:mrSessionData", "date": "2024-05-17"})  # fmt: skip
    made.raise_for_status()
    session = f"{xnat_server.url}/data/experiments/{made.text}"
    http.put(f"{session}/scans/3", params={"type": "T1w", "frames": "176"}).raise_for_status()
    http.put(f"{session}/scans/3/resources/NIFTI", params={"format": "NIFTI"}).raise_for_status()
    http.put(f"{session}/assessors/QC1", params={
        "xsiType": "xnat:qcAssessmentData", "xnat:qcAssessmentData/rater": "ml",
    }).raise_for_status()  # fmt: skip
    http.put(f"{session}/assessors/ROI1", params={
        "xsiType": "icr:roiCollectionData", "icr:roiCollectionData/collectionType": "SEG",
    }).raise_for_status()  # fmt: skip

    root = _document(http, base, served_schema)
    assert root.tag == f"{{{XNAT_NS}}}Project" and root.get("ID") == project
    assert root.xpath("xnat:PI/xnat:firstname/text()", namespaces=NS) == ["Ada"]

    root = _document(http, f"{base}/subjects/S1", served_schema)
    assert root.tag == f"{{{XNAT_NS}}}Subject" and root.get("label") == "S1"
    assert root.get("project") == project
    [experiment] = root.xpath("xnat:experiments/xnat:experiment", namespaces=NS)
    assert experiment.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "xnat:mrSessionData"

    root = _document(http, session, served_schema)
    assert root.tag == f"{{{XNAT_NS}}}MRSession" and root.get("ID") == made.text
    assert root.xpath("xnat:date/text()", namespaces=NS) == ["2024-05-17"]
    assert root.xpath("xnat:scans/xnat:scan/@ID", namespaces=NS) == ["3"]
    assert root.xpath("xnat:scans/xnat:scan/xnat:file/@label", namespaces=NS) == ["NIFTI"]
    assert root.xpath("xnat:assessors/xnat:assessor/@label", namespaces=NS) == ["QC1", "ROI1"]

    root = _document(http, f"{session}/scans/3", served_schema)
    assert root.tag == f"{{{XNAT_NS}}}MRScan" and root.get("type") == "T1w"
    assert root.xpath("xnat:frames/text()", namespaces=NS) == ["176"]
    root = _document(http, f"{session}/assessors/QC1", served_schema)
    assert root.tag == f"{{{XNAT_NS}}}QCAssessment"
    assert root.xpath("xnat:rater/text()", namespaces=NS) == ["ml"]
    root = _document(http, f"{session}/assessors/ROI1", served_schema)
    assert root.tag == "{http://www.icr.ac.uk/icr}RoiCollection"
    assert root.xpath("icr:collectionType/text()", namespaces=NS) == ["SEG"]


def test_xml_reads_keep_project_roles(xnat_server, project):
    """A Collaborator reads the document (xnatpy, unmodified); an outsider is refused."""
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{project}/subjects/S1").raise_for_status()
    xnat_server.add_user("xmldocs_collab", "pw-xmldocs-c", project, "Collaborator")
    xnat_server.add_user("xmldocs_outsider", "pw-xmldocs-o")
    with xnat.connect(xnat_server.url, user="xmldocs_collab", password="pw-xmldocs-c",
                      loglevel="CRITICAL") as session:  # fmt: skip
        text = session.get(f"/data/projects/{project}/subjects/S1", format="xml").text
    assert etree.fromstring(text.encode()).get("label") == "S1"
    outsider = xnat_server.session("xmldocs_outsider", "pw-xmldocs-o")
    reply = outsider.get(f"{xnat_server.url}/data/projects/{project}/subjects/S1",
                         params={"format": "xml"})  # fmt: skip
    assert reply.status_code in (403, 404) and "<xnat:" not in reply.text


def test_a_value_no_xml_document_can_hold_is_refused(xnat_server, project):
    http = xnat_server.session()
    subject = f"{xnat_server.url}/data/projects/{project}/subjects/S1"
    reply = http.put(subject, params={"xnat:subjectData/fields/field[name=x]/field": "a\x0bb"})
    assert reply.status_code == 400 and "control character U+000B" in reply.text
    assert http.put(subject, params={"group": "two\nlines\tand <&>"}).status_code == 201
    root = etree.fromstring(http.get(subject, params={"format": "xml"}).content)
    assert root.xpath("xnat:group/text()", namespaces=NS) == ["two\nlines\tand <&>"]
