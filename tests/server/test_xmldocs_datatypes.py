"""Generic image assessors (xnat:qcAssessmentData, ...) and reconstructions
(.../reconstructions/{id}, with resources), created and listed by unmodified pyxnat and xnatpy
as in pyxnat's own resources_test, with XNAT's roles."""

from __future__ import annotations

import logging

import pyxnat
import xnat
from lxml import etree

NS = {"xnat": "http://nrg.wustl.edu/xnat"}


def test_pyxnat_creates_a_qc_assessor_and_a_reconstruction(xnat_server, project):
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    central = pyxnat.Interface(server=xnat_server.url, user=xnat_server.user,
                               password=xnat_server.password)  # fmt: skip
    experiment = central.select.project(project).subject("S1").experiment("E1")
    experiment.create()
    assessor = experiment.assessor("QC1")
    assert not assessor.exists()
    assessor.create(assessors="xnat:qcAssessmentData")
    assert assessor.exists() and assessor.datatype() == "xnat:qcAssessmentData"
    assessor.attrs.set("xnat:qcAssessmentData/rater", "ml")
    assert assessor.attrs.get("xnat:qcAssessmentData/rater") == "ml"
    reconstruction = experiment.reconstruction("R1")
    assert not reconstruction.exists()
    reconstruction.create()
    assert reconstruction.exists() and reconstruction.id() == "R1"
    assert reconstruction.datatype() == "xnat:reconstructedImageData"
    assert experiment.reconstructions().get() == ["R1"]
    central.disconnect()

    http = xnat_server.session()
    rows = http.get(f"{xnat_server.url}/data/experiments",
                    params={"project": project, "xsiType": "xnat:imageAssessorData"}).json()
    assert [r["xsiType"] for r in rows["ResultSet"]["Result"]] == ["xnat:qcAssessmentData"]


def test_reconstruction_resources_roles_and_documents(xnat_server, project):
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{project}/subjects/S1").raise_for_status()
    made = http.put(f"{xnat_server.url}/data/projects/{project}/subjects/S1/experiments/E1",
                    params={"xsiType": "xnat:ctSessionData"})  # fmt: skip
    made.raise_for_status()
    session = f"{xnat_server.url}/data/experiments/{made.text}"
    xnat_server.add_user("xmldocs_member", "pw-xmldocs-m", project, "Member")
    member = xnat_server.session("xmldocs_member", "pw-xmldocs-m")
    reply = member.put(f"{session}/reconstructions/R1",
                       params={"type": "MPR", "baseScanType": "T1"})  # fmt: skip
    assert reply.status_code == 201, reply.text
    assert member.put(f"{session}/reconstructions/R1/resources/NIFTI").status_code in (200, 201)
    put = member.put(f"{session}/reconstructions/R1/resources/NIFTI/files/r.nii", data=b"nii")
    assert put.status_code in (200, 201), put.text
    assert member.put(f"{session}/reconstructions/..", params={"type": "x"}).status_code in (
        400, 404)  # fmt: skip

    with xnat.connect(xnat_server.url, user="xmldocs_member", password="pw-xmldocs-m",
                      loglevel="CRITICAL") as connection:  # fmt: skip
        found = connection.experiments[made.text].reconstructions["R1"]
        assert (found.type, found.base_scan_type) == ("MPR", "T1")
    rows = http.get(f"{session}/reconstructions", params={"columns": "ID,type"}).json()
    assert [(r["ID"], r["type"]) for r in rows["ResultSet"]["Result"]] == [("R1", "MPR")]
    files = http.get(f"{session}/reconstructions/R1/resources/NIFTI/files").json()
    assert [f["Name"] for f in files["ResultSet"]["Result"]] == ["r.nii"]
    root = etree.fromstring(http.get(session, params={"format": "xml"}).content)
    [reco] = root.xpath("xnat:reconstructions/xnat:reconstructedImage", namespaces=NS)
    assert (reco.get("ID"), reco.get("baseScanType")) == ("R1", "T1")
    assert reco.xpath("xnat:out/xnat:file/@label", namespaces=NS) == ["NIFTI"]

    assert member.delete(f"{session}/reconstructions/R1").status_code == 403
    assert http.delete(f"{session}/reconstructions/R1").status_code == 200
    assert http.get(f"{session}/reconstructions/R1").status_code == 404
