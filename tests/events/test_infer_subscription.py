"""The opt-in infer subscription (event_handlers/infer.subscription.json) on the embedded server,
local backend: a plain `events install` leaves it out; `--only infer --set MODEL=...` installs it
(once); bad settings are one line and install nothing; a session built over REST, whose scans'
DICOM arrive after it, gets the model's AI SEG collection from the job its T1w DICOM set off,
while its T2w DICOM's job (not an input of the model) stores nothing and succeeds.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from inference.inference_models import tissues_model_with_lineage

from xnat_ml.cli import main
from xnat_ml.imaging.ai_collections import ai_collection_label
from xnat_ml.sample.project import build_sample_project
from xnat_ml.training.project_models import install_model
from xnat_ml.xnat import connect, download_resource

REPO = Path(__file__).resolve().parents[2]
PROJECT = "EVINF"
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")
INFER_SUB = f"{PROJECT}: Scan DICOM stored: run a model on its session (infer)"


class Site:
    def __init__(self, server, dicom: dict[str, list[Path]]) -> None:
        self.server, self.url, self.http = server, server.url, server.session()
        self.dicom = dicom  # scan type (T1w, T2w) -> its DICOM files

    def install(self, *args: str, user: str = "evinf_owner", password: str = "owner-pw"):
        return main(["events", "install", "--project", PROJECT, *args, "--url", self.url,
                     "--user", user, "--password", password])  # fmt: skip

    def subscriptions(self) -> dict[str, dict]:
        subs = self.http.get(f"{self.url}/xapi/projects/{PROJECT}/events/subscriptions").json()
        return {s["name"]: s for s in subs}


@pytest.fixture(scope="module")
def site(xnat_server, install_command, tmp_path_factory) -> Site:
    """Project EVINF with the model `tissues` v1 (T1w input, by its dataset's definition), an
    Owner and a Member, and the DICOM of a sample session, whose session is then deleted; the
    infer command installed by a site admin (a project owner cannot)."""
    install_command(json.loads((REPO / "command_json" / "infer.json").read_text()))
    work = tmp_path_factory.mktemp("events-infer")
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    xnat_server.add_user("evinf_owner", "owner-pw", PROJECT, "Owner")
    xnat_server.add_user("evinf_member", "member-pw", PROJECT, "Member")
    dicom = {}
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        [built] = build_sample_project(session, PROJECT, subjects=1)
        model = tissues_model_with_lineage(session, PROJECT, work / "model")
        assert install_model(session, PROJECT, model, "tissues")[0] == 1
        scans = session.get_json(f"/data/experiments/{built.session_id}/scans")
        for row in scans["ResultSet"]["Result"]:
            kind = row["type"][:3]
            dicom[kind] = download_resource(
                session, f"/data/experiments/{built.session_id}/scans/{row['ID']}/resources/DICOM",
                work / kind,
            )  # fmt: skip
    http.delete(f"{xnat_server.url}/data/experiments/{built.session_id}",
                params={"removeFiles": "true"}).raise_for_status()  # fmt: skip
    assert set(dicom) == {"T1w", "T2w"}
    return Site(xnat_server, dicom)


def test_plain_install_leaves_the_infer_subscription_out(site: Site, capsys):
    assert site.install(user=site.server.user, password=site.server.password) == 0
    out = capsys.readouterr().out
    assert "roi-to-mask.subscription.json: " in out
    assert "infer" not in out
    assert not any("(infer)" in name for name in site.subscriptions())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "infer"], "event handler infer: needs --set MODEL=..."),
        (["--only", "infer", "--set", "MODEL=nosuch"], "model nosuch: not in project EVINF"),
        (["--only", "infer", "--set", "MODEL=tissues:9"], "model tissues: no version v9"),
        (["--only", "infer", "--set", "MODEL=x'; rm -rf ~"], "model name \"x'; rm -rf ~\""),
        (["--only", "infer", "--set", "MODEL=tissues", "--set", "DEVICE=cuda"],
         "--set DEVICE: no selected event handler takes it (they take MODEL)"),
        (["--set", "MODEL=tissues"], "--set MODEL: no selected event handler takes it"),
        (["--only", "nosuch"], "event handler nosuch: not among infer, roi-to-mask"),
    ],
)
def test_bad_settings_are_one_line_and_install_nothing(site: Site, capsys, args, message):
    assert site.install(*args) == 1
    err = capsys.readouterr().err
    assert err.startswith("xnat-ml: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert INFER_SUB not in site.subscriptions()


def test_a_member_may_not_install_it(site: Site, capsys):
    assert site.install("--only", "infer", "--set", "MODEL=tissues",
                        user="evinf_member", password="member-pw") == 1  # fmt: skip
    assert "events install needs the Owner role (you are Member)" in capsys.readouterr().err
    assert INFER_SUB not in site.subscriptions()


def _upload_scan(site: Site, session: str, scan: str, kind: str, files: list[Path]) -> None:
    """A scan record with its series UID, then its DICOM in one zip (one resource creation)."""
    import pydicom

    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    site.http.put(f"{session}/scans/{scan}", params={
        "xsiType": "xnat:mrScanData", "type": kind, "series_description": kind, "UID": uid,
    }).raise_for_status()  # fmt: skip
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for n, path in enumerate(files):
            archive.writestr(f"{n:04d}.dcm", path.read_bytes())  # numbered, as scanners do
    upload = f"{session}/scans/{scan}/resources/DICOM/files/dicom.zip"
    site.http.put(upload, params={"extract": "true"}, data=packed.getvalue()).raise_for_status()


def _finished_jobs(site: Site, count: int) -> list[dict]:
    """The jobs the project's deliveries launched, once `count` of them have ended."""
    deadline = time.monotonic() + 600
    while True:
        deliveries = site.http.get(f"{site.url}/xapi/projects/{PROJECT}/events/delivered").json()
        ids = [d["container-id"] for d in deliveries
               if d["subscription"]["name"] == INFER_SUB and d.get("container-id")]  # fmt: skip
        jobs = [site.http.get(f"{site.url}/xapi/containers/{i}").json() for i in ids]
        if len(jobs) >= count and all(j["status"] in FINAL for j in jobs):
            return jobs
        assert time.monotonic() < deadline, (deliveries, jobs)
        time.sleep(1)


def test_new_session_gets_the_models_collection_from_its_dicom_event(site: Site, capsys):
    assert site.install("--only", "infer", "--set", "MODEL=tissues") == 0
    assert "infer.subscription.json: created in project EVINF" in capsys.readouterr().out
    assert site.install("--only", "infer", "--set", "MODEL=tissues:1") == 0
    assert "infer.subscription.json: unchanged" in capsys.readouterr().out
    sub = site.subscriptions()[INFER_SUB]
    assert sub["attributes"] == {"MODEL": "tissues:1"}  # pinned at install
    assert [name for name in site.subscriptions() if "(infer)" in name] == [INFER_SUB]

    member = site.server.session("evinf_member", "member-pw")
    base = f"{site.url}/data/projects/{PROJECT}/subjects/EV_NEW"
    session = f"{base}/experiments/EV_NEW_MR"
    member.put(base).raise_for_status()
    member.put(session, params={"xsiType": "xnat:mrSessionData"}).raise_for_status()
    site.http = member  # the scans and their DICOM come after the session, as a Member's
    _upload_scan(site, session, "2", "T2w", site.dicom["T2w"])
    _upload_scan(site, session, "1", "T1w", site.dicom["T1w"])
    site.http = site.server.session()

    jobs = _finished_jobs(site, 2)
    assert len(jobs) == 2, jobs
    logs = {j["id"]: "".join(site.http.get(f"{site.url}/xapi/containers/{j['id']}/logs/{s}").text
                             for s in ("stdout", "stderr")) for j in jobs}  # fmt: skip
    assert [j["status"] for j in jobs] == ["Complete", "Complete"], (jobs, logs)
    assert any("scan 2 of session EV_NEW_MR: not an input image of model tissues v1" in log
               for log in logs.values()), logs  # fmt: skip
    assert any("stored SEG collection" in log for log in logs.values()), logs
    # each job's record (from its XNAT workflow's last step) says what it did
    messages = sorted(j["message"] for j in jobs)
    assert messages[0].startswith("infer: scan 2 of session EV_NEW_MR: not an input image"), jobs
    assert messages[1].startswith("infer: stored SEG collection AI_tissues"), jobs
    session_id = site.http.get(session, params={"format": "json"}).json()["items"][0][
        "data_fields"]["ID"]  # fmt: skip
    rows = site.http.get(f"{site.url}/data/experiments/{session_id}/assessors",
                         params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    [row] = [r for r in rows if r["label"] == ai_collection_label("tissues", 1, "EV_NEW_MR")]
    files = site.http.get(f"{site.url}/data/experiments/{session_id}/assessors/{row['ID']}/"
                          "resources/LABELMAP/files", params={"format": "json"}).json()  # fmt: skip
    assert "labels.nii.gz" in {f["Name"] for f in files["ResultSet"]["Result"]}
