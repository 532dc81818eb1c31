"""DICOM import over real HTTP: xnatpy's services.import_, pyxnat listings, hostile uploads."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import xnat
from bombs import declared_tgz
from dicom_samples import write_series, zip_bytes, zip_folder
from pyxnat import Interface

pytestmark = pytest.mark.timeout(300)

IMPORT = "/data/services/import?import-handler=DICOM-zip&inbody=true"


def _connect(xnat_server):
    return xnat.connect(xnat_server.url, user=xnat_server.user, password=xnat_server.password)


def _two_series(folder: Path) -> tuple[dict, dict]:
    t1 = write_series(folder / "t1", number=3, description="T1 MPRAGE", slices=4)
    t2 = write_series(folder / "t2", study_uid=t1["study_uid"], number=7,
                      description="T2 FLAIR", slices=2)
    return t1, t2


def test_xnatpy_import_creates_subject_session_scans(xnat_server, project, tmp_path):
    t1, t2 = _two_series(tmp_path / "dicom")
    (tmp_path / "dicom" / "notes.txt").write_text("a non-DICOM file")
    (tmp_path / "dicom" / "DICOMDIR").write_bytes(b"\x00" * 200)
    archive = tmp_path / "upload.zip"
    archive.write_bytes(zip_folder(tmp_path / "dicom"))

    with _connect(xnat_server) as session:
        imported = session.services.import_(
            archive, project=project, destination=f"/archive/projects/{project}",
            import_handler="DICOM-zip",
        )
        assert imported.label == "PAT001"
        assert imported.__xsi_type__ == "xnat:mrSessionData"
        assert (imported.date.isoformat(), imported.modality) == ("2024-01-31", "MR")
        subject = session.projects[project].subjects["PAT001_Test"]
        assert list(subject.experiments.values())[0].id == imported.id
        scans = {s.id: s for s in imported.scans.values()}
        assert set(scans) == {"3", "7"}
        assert (scans["3"].type, scans["3"].series_description, scans["3"].uid) == (
            "T1 MPRAGE", "T1 MPRAGE", t1["series_uid"])
        assert scans["3"].__xsi_type__ == "xnat:mrScanData"
        files = scans["3"].resources["DICOM"].files
        assert len(files) == 4
        digests = {hashlib.md5(p.read_bytes()).hexdigest() for p in t1["paths"]}
        assert {f.digest for f in files.values()} == digests
        ds = scans["7"].read_dicom()  # xnatpy downloads a file of the DICOM resource
        assert ds.SeriesInstanceUID == t2["series_uid"]
        session_id = imported.id

    http = xnat_server.session()
    picked = http.get(f"{xnat_server.url}/data/experiments/{session_id}/scans/3,7"
                      "/resources/DICOM/files?format=zip")
    with zipfile.ZipFile(io.BytesIO(picked.content)) as download:
        names = download.namelist()
    assert len(names) == 6 and all(n.startswith("PAT001/scans/") for n in names)

    response = http.post(
        f"{xnat_server.url}{IMPORT}&dest=/archive/projects/{project}&overwrite=append",
        data=archive.read_bytes(),
    )
    assert response.ok, response.text
    assert response.headers["X-Skipped-Files"] == "2"
    assert "notes.txt" in xnat_server.log_tail(200)


def test_pyxnat_sees_imported_session(xnat_server, project, tmp_path):
    write_series(tmp_path / "ct", patient="CT7", modality="CT", number=None, slices=2)
    dest = f"/archive/projects/{project}/subjects/SUBJ/experiments/CT_1"
    url = f"{xnat_server.url}{IMPORT}&dest={dest}"
    reply = xnat_server.session().post(url, data=zip_folder(tmp_path / "ct"))
    assert reply.text.strip() == f"/data{dest}"
    interface = Interface(server=xnat_server.url, user=xnat_server.user,
                          password=xnat_server.password)
    experiment = interface.select.project(project).subject("SUBJ").experiment("CT_1")
    assert experiment.exists()
    assert experiment.datatype() == "xnat:ctSessionData"
    assert list(experiment.scans().get()) == ["1"]  # no SeriesNumber: the next free number
    assert len(experiment.scan("1").resource("DICOM").files().get()) == 2
    interface.disconnect()


def test_overwrite_modes(xnat_server, project, tmp_path):
    t1 = write_series(tmp_path / "a", number=1, slices=2)
    http = xnat_server.session()
    url = f"{xnat_server.url}{IMPORT}&dest=/archive/projects/{project}"
    assert http.post(url, data=zip_folder(tmp_path / "a")).ok
    assert http.post(url, data=zip_folder(tmp_path / "a")).status_code == 409  # overwrite=none

    write_series(tmp_path / "b", study_uid=t1["study_uid"], number=1, description="other", slices=1)
    assert http.post(f"{url}&overwrite=append", data=zip_folder(tmp_path / "b")).ok
    session = f"/data/projects/{project}/subjects/PAT001_Test/experiments/PAT001"
    scans = f"{xnat_server.url}{session}/scans"
    ids = [r["ID"] for r in http.get(f"{scans}?format=json").json()["ResultSet"]["Result"]]
    assert ids == ["1", "1-MR1"]  # same SeriesNumber, another series: XNAT's suffix

    assert http.post(f"{url}&overwrite=delete", data=zip_folder(tmp_path / "b")).ok
    rows = http.get(f"{scans}?format=json").json()["ResultSet"]["Result"]
    assert [r["ID"] for r in rows] == ["1"]
    listing = http.get(f"{scans}/1/resources/DICOM/files?format=json").json()
    assert listing["ResultSet"]["totalRecords"] == "1"


@pytest.mark.parametrize(
    "body,status",
    [
        (b"not a zip", 400),
        (b"PK\x03\x04broken", 400),
        (zip_bytes({"readme.txt": b"hello", "data.bin": b"\x00" * 300}), 400),
        (zip_bytes({"../../escape.dcm": b"x"}), 400),
        (b"", 400),
        (declared_tgz(2**40), 413),
    ],
    ids=["junk", "corrupt", "no-dicom", "slip", "empty", "bomb"],
)
def test_bad_uploads_are_refused_and_leave_nothing(xnat_server, project, body, status):
    http = xnat_server.session()
    reply = http.post(f"{xnat_server.url}{IMPORT}&dest=/archive/projects/{project}", data=body)
    assert reply.status_code == status, reply.text
    listing = http.get(f"{xnat_server.url}/data/projects/{project}/subjects?format=json").json()
    assert listing["ResultSet"]["Result"] == []
    assert not any((xnat_server.data_dir / "staging").iterdir())
    assert not list(xnat_server.data_dir.parent.rglob("escape.dcm"))
    assert http.get(f"{xnat_server.url}/xapi/siteConfig/buildInfo").ok


@pytest.mark.parametrize(
    "query,status",
    [
        ("dest=/archive/projects/NOPE_NO_SUCH", 404),
        ("dest=/prearchive/projects/{p}/subjects/S", 400),
        ("dest=/archive/projects/{p}&overwrite=maybe", 400),
        ("dest=/archive/projects/{p}/subjects/..", 400),
        ("", 400),
        ("dest=/archive/projects/{p}&import-handler=gradual-DICOM", 400),
    ],
)
def test_bad_destinations(xnat_server, project, tmp_path, query, status):
    write_series(tmp_path, slices=1)
    url = f"{xnat_server.url}/data/services/import?{query.format(p=project)}"
    assert xnat_server.session().post(url, data=zip_folder(tmp_path)).status_code == status


def test_collaborator_cannot_import(xnat_server, project, tmp_path):
    write_series(tmp_path, slices=1)
    xnat_server.add_user("h2collab", "pw-collab", project, "Collaborator")
    reply = xnat_server.session("h2collab", "pw-collab").post(
        f"{xnat_server.url}{IMPORT}&dest=/archive/projects/{project}", data=zip_folder(tmp_path)
    )
    assert reply.status_code == 403
