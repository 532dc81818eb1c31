"""Crash consistency: the server is SIGKILLed at each stage of every way files enter the archive
(XNAT_ML_FAULT, see xnat_ml/server/faults.py), restarted, and must then hold a catalogue and a
disk that agree exactly, an empty staging area, and accept a retry of the interrupted request."""

from __future__ import annotations

import hashlib
import os
import shutil

import pydicom
import pytest
import requests
from archive_state import assert_consistent
from dicom_samples import write_rtstruct, write_series, zip_bytes, zip_folder

from xnat_ml.server.faults import STAGES

PROJECT = "JRNL"
OPERATIONS = ("upload", "extract", "import", "roi")


@pytest.fixture(scope="module")
def server(start_xnat_server, tmp_path_factory):
    """One server for the module, with a project and one imported session for ROI saves."""
    srv = start_xnat_server("journal-faults")
    http = srv.session()
    http.put(f"{srv.url}/data/projects/{PROJECT}").raise_for_status()
    folder = tmp_path_factory.mktemp("base-series")
    srv.series = write_series(folder / "mr", patient="BASE", slices=2)
    http.post(f"{srv.url}/data/services/import?import-handler=DICOM-zip&project={PROJECT}",
              data=zip_folder(folder / "mr")).raise_for_status()
    rows = http.get(f"{srv.url}/data/projects/{PROJECT}/experiments?format=json").json()
    srv.session_id = rows["ResultSet"]["Result"][0]["ID"]
    return srv


def _crash(server, point: str, send) -> None:
    """Restart the server armed to die at `point`, send the request, restart it unarmed."""
    server.stop()
    server.env["XNAT_ML_FAULT"] = point
    server.start()
    with pytest.raises(requests.ConnectionError):
        send()
    assert server.process.wait(timeout=30) != 0
    server.stop()
    del server.env["XNAT_ML_FAULT"]
    server.start()


def _instances(series: dict) -> dict[str, bytes]:
    """The files an import of the series catalogues: {SOPInstanceUID}.dcm → bytes."""
    return {f"{pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID}.dcm": p.read_bytes()
            for p in series["paths"]}


class _Write:
    """One request of an operation, its retry, and how to tell whether it landed."""

    def __init__(self, server, operation: str, tag: str, tmp_path) -> None:
        self.server, self.operation, self.tag = server, operation, tag
        self.http = server.session()
        base = f"{server.url}/data/projects/{PROJECT}"
        rng = os.urandom
        if operation in ("upload", "extract"):
            self.files = {"a.bin": rng(50_000)} if operation == "upload" else {
                "x/1.bin": rng(30_000), "x/2.bin": rng(20_000), "3.bin": rng(10)}
            self.listing = f"{base}/resources/R_{tag}/files"
            name = "a.bin" if operation == "upload" else "up.zip?extract=true"
            self.url = f"{self.listing}/{name}"
            self.body = self.files["a.bin"] if operation == "upload" else zip_bytes(self.files)
            self.retry_args = ("&" if "?" in self.url else "?") + "overwrite=true"
        elif operation == "import":
            series = write_series(tmp_path / "mr", patient=f"P_{tag}", slices=3)
            self.files = _instances(series)
            self.body = zip_folder(tmp_path / "mr")
            self.url = (f"{server.url}/data/services/import?import-handler=DICOM-zip"
                        f"&project={PROJECT}&subject=S_{tag}&session=E_{tag}")
            self.listing = f"{base}/experiments/E_{tag}/scans/1/resources/DICOM/files"
            self.retry_args = "&overwrite=append"
        else:
            rt = write_rtstruct(tmp_path / "rt.dcm", server.series, label="Reader")
            self.body = rt.read_bytes()
            self.files = {f"roi_{tag}.dcm": self.body}
            self.url = (f"{server.url}/xapi/roi/projects/{PROJECT}/sessions/{server.session_id}"
                        f"/collections/roi_{tag}?type=RTSTRUCT")
            self.listing = (f"{server.url}/data/experiments/{server.session_id}/assessors/"
                            f"roi_{tag}/resources/RTSTRUCT/files")
            self.retry_args = "&overwrite=true"

    def send(self, extra: str = "") -> requests.Response:
        method = self.http.post if self.operation == "import" else self.http.put
        return method(self.url + extra, data=self.body, timeout=60)

    def landed(self) -> dict[str, str] | None:
        """path → md5 as listed, or None when the object does not exist."""
        reply = self.http.get(f"{self.listing}?format=json")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return {r["path"]: r["digest"] for r in reply.json()["ResultSet"]["Result"]}

    def expected(self) -> dict[str, str]:
        return {path: hashlib.md5(data).hexdigest() for path, data in self.files.items()}

    def check_whole(self, listed: dict[str, str]) -> None:
        want = self.expected()
        assert set(listed) == set(want)
        for path, md5 in want.items():
            assert listed[path] == md5
            got = self.http.get(f"{self.listing}/{path}")
            assert got.ok and hashlib.md5(got.content).hexdigest() == listed[path]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_killed_write_recovers(server, operation, stage, tmp_path):
    write = _Write(server, operation, f"{operation}_{stage}", tmp_path)
    _crash(server, f"{operation}.{stage}", write.send)

    assert_consistent(server.data_dir)
    listed = write.landed()
    if stage == "staged":  # killed before the commit: as if never sent
        assert not listed
    else:  # committed: the journal finished publishing at start-up
        write.check_whole(listed)

    retry = write.send(write.retry_args)
    assert retry.status_code == 200, retry.text
    write.check_whole(write.landed())
    assert_consistent(server.data_dir)


def test_orphans_from_before_the_journal_are_quarantined(server, tmp_path):
    """The reported case: an import killed after moving DICOM into archive/ (old code) left
    files under the folder the next session would get; start-up quarantines them, and the new
    session's folder holds only its own files."""
    http = server.session()
    rows = http.get(f"{server.url}/data/experiments?format=json").json()["ResultSet"]["Result"]
    last = max(int(r["ID"].rsplit("E", 1)[1]) for r in rows)
    next_id = f"XNAT_E{last + 2:05d}"  # the subject of the import below takes one number first
    orphan_dir = server.data_dir / "archive" / PROJECT / "experiments" / next_id / "scans" / "1"
    orphan = orphan_dir / "resources" / "999" / "other-patient.dcm"
    server.stop()
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"another patient")
    server.start()

    assert not orphan.exists()
    quarantined = list((server.data_dir / "quarantine").rglob("other-patient.dcm"))
    assert [p.read_bytes() for p in quarantined] == [b"another patient"]
    assert "in no catalogue; quarantined" in server.log_tail(200)

    series = write_series(tmp_path / "mr", patient="NEXT", slices=2)
    reply = http.post(f"{server.url}/data/services/import?import-handler=DICOM-zip"
                      f"&project={PROJECT}&subject=NEXT&session=NEXT",
                      data=zip_folder(tmp_path / "mr"))
    assert reply.ok, reply.text
    assert_consistent(server.data_dir)
    folder = server.data_dir / "archive" / PROJECT / "experiments"
    assert not list(folder.rglob("other-patient.dcm"))
    assert {p.name for p in (folder.glob("*/scans/1/resources/*/*.dcm"))} >= set(
        _instances(series))


def test_new_object_never_meets_a_stale_folder(server):
    """A folder already at a new object's place is quarantined before the object uses it."""
    http = server.session()
    http.put(f"{server.url}/data/projects/{PROJECT}/resources/FIRST").raise_for_status()
    rows = http.get(f"{server.url}/data/projects/{PROJECT}/resources?format=json").json()
    pk = max(int(r["xnat_abstractresource_id"]) for r in rows["ResultSet"]["Result"])
    stale = server.data_dir / "archive" / PROJECT / "resources" / str(pk + 1) / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left over")  # appears while the server runs (copied in by hand)
    reply = http.put(f"{server.url}/data/projects/{PROJECT}/resources/SECOND/files/new.txt",
                     data=b"mine")
    assert reply.ok, reply.text
    assert not stale.exists()
    assert list((server.data_dir / "quarantine").rglob("stale.txt"))
    assert_consistent(server.data_dir)
    shutil.rmtree(server.data_dir / "quarantine")
