"""A job's results are all or none, including what the job uploaded itself with its token.

Real server, local backend: small commands PUT and DELETE files over REST with the job's
$XNAT_USER/$XNAT_PASS (as roi-to-mask uploads its image NIfTI), then fail or succeed; the archive
afterwards is compared with what it was before. The undo log (`job_writes`) and the bytes it
keeps aside under DATA/job-writes/ are gone once the job has ended, whichever way.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect

REPO = Path(__file__).resolve().parents[2]
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")
PROJECT = "JOBWRITES"


class Site:
    """A server of its own (this module kills it) with one project and one empty session."""

    def __init__(self, server) -> None:
        self.server, self.url, self.http = server, server.url, server.session()
        for path in (f"projects/{PROJECT}", f"projects/{PROJECT}/subjects/S1"):
            self.http.put(f"{self.url}/data/{path}").raise_for_status()
        made = self.http.put(f"{self.url}/data/projects/{PROJECT}/subjects/S1/experiments/E1",
                             params={"xsiType": "xnat:mrSessionData"})  # fmt: skip
        made.raise_for_status()
        self.session_id = made.text.strip()
        self.session = f"/data/experiments/{self.session_id}"

    def put(self, uri: str, body: bytes, **params) -> None:
        self.http.put(f"{self.url}{uri}", data=body, params=params).raise_for_status()

    def run(self, name: str, line: str, outputs=(), handlers=(), running=False) -> dict:
        """Install a session command running `line`, launch it on E1; the finished job (or,
        with `running`, the job's id once it runs)."""
        command = {
            "name": name, "version": "1", "schema-version": "1.0", "type": "docker",
            "image": "xnat-ml/xnat-ml:0.1.0", "command-line": line,
            "mounts": [{"name": "out", "writable": True, "path": "/output"}],
            "inputs": [], "outputs": list(outputs),
            "xnat": [{"name": f"{name}-session", "contexts": ["xnat:imageSessionData"],
                      "external-inputs": [{"name": "session", "type": "Session",
                                           "required": True}],
                      "derived-inputs": [], "output-handlers": list(handlers)}],
        }  # fmt: skip
        wrapper = self.install(command)[f"{name}-session"]
        answer = self.http.post(
            f"{self.url}/xapi/projects/{PROJECT}/wrappers/{wrapper}/root/session/launch",
            json={"session": self.session_id},
        )
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["id"]
        return self.wait(job_id, until=("Running",) if running else FINAL)

    def install(self, command: dict) -> dict[str, int]:
        answer = self.http.post(f"{self.url}/xapi/commands", json=command)
        assert answer.status_code in (201, 409), answer.text
        query = {"name": command["name"], "version": command["version"]}
        [listed] = self.http.get(f"{self.url}/xapi/commands", params=query).json()
        wrappers = {w["name"]: w["id"] for w in listed["xnat"]}
        for wrapper in wrappers.values():
            for scope in ("", f"/projects/{PROJECT}"):
                self.http.put(f"{self.url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()
        return wrappers

    def wait(self, job_id: int, until=FINAL, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"{self.url}/xapi/containers/{job_id}").json()
            if job["status"] in until:
                return job
            assert job["status"] not in FINAL, job
            time.sleep(0.2)
        raise AssertionError(f"container {job_id} still {job['status']}")

    def stdout(self, job: dict) -> str:
        return self.http.get(f"{self.url}/xapi/containers/{job['id']}/logs/stdout").text

    def resources(self, uri: str) -> set[str]:
        rows = self.http.get(f"{self.url}{uri}/resources", params={"format": "json"}).json()
        return {row["label"] for row in rows["ResultSet"]["Result"]}

    def files(self, uri: str) -> dict[str, tuple[str, str]]:
        """name → (size, md5) of a resource's files, as the listing says."""
        rows = self.http.get(f"{self.url}{uri}/files", params={"format": "json"}).json()
        return {r["path"]: (r["Size"], r["digest"]) for r in rows["ResultSet"]["Result"]}

    def subjects(self) -> set[str]:
        rows = self.http.get(f"{self.url}/data/projects/{PROJECT}/subjects",
                             params={"format": "json"}).json()  # fmt: skip
        return {row["label"] for row in rows["ResultSet"]["Result"]}

    def undo_log(self, job_id: int) -> tuple[int, bool]:
        """(rows in job_writes, whether kept-aside bytes remain) for the job."""
        data = self.server.data_dir
        with sqlite3.connect(f"file:{data / 'xnat-ml.sqlite'}?mode=ro", uri=True) as db:
            [(rows,)] = db.execute("SELECT count(*) FROM job_writes WHERE job_id = ?", (job_id,))
        return rows, (data / "job-writes" / str(job_id)).exists()


def curl(method: str, uri: str, body: str | None = None, **params) -> str:
    """A shell command sending one request with the job's credentials; fails on a 4xx/5xx."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    data = f" --data-binary '{body}'" if body is not None else ""
    return (f'curl -sSf -u "$XNAT_USER:$XNAT_PASS" -X {method}{data} '
            f'"$XNAT_HOST{uri}{"?" + query if query else ""}"')  # fmt: skip


@pytest.fixture(scope="module")
def site(start_xnat_server) -> Site:
    return Site(start_xnat_server("jobwrites"))


def _archive_of(site: Site) -> dict:
    """What a job could change on E1: its resources with their files, and the subjects."""
    return {
        "resources": {label: site.files(f"{site.session}/resources/{label}")
                      for label in site.resources(site.session)},  # fmt: skip
        "subjects": site.subjects(),
    }


def _writes(tag: str, session: str) -> str:
    """Overwrite DATA/a.txt, add DATA/c.txt, delete DATA/b.txt, create resource NEW_{tag} with
    a file (and, by extract, a folder), and a subject: all with the job's token."""
    data = f"{session}/resources/DATA/files"
    new = f"{session}/resources/NEW_{tag}/files"
    return " && ".join([
        curl("PUT", f"{data}/a.txt", "new a", overwrite="true"),
        curl("PUT", f"{data}/c.txt", "new c"),
        curl("DELETE", f"{data}/b.txt"),
        curl("PUT", f"{new}/x.txt", "x", format="TXT"),
        "mkdir -p /tmp/$$ && echo y > /tmp/$$/y.txt && tar -czf /tmp/$$/y.tgz -C /tmp/$$ y.txt",
        f'curl -sSf -u "$XNAT_USER:$XNAT_PASS" -X PUT --data-binary @/tmp/$$/y.tgz '
        f'"$XNAT_HOST{new}/sub/y.tgz?extract=true"',
        curl("PUT", f"/data/projects/{PROJECT}/subjects/MADE_{tag}"),
        "echo WROTE",
    ])  # fmt: skip


@pytest.fixture
def data_resource(site: Site):
    """E1's resource DATA with a.txt and b.txt, as before every job here."""
    site.http.delete(f"{site.url}{site.session}/resources/DATA")
    for name in ("a.txt", "b.txt"):
        site.put(f"{site.session}/resources/DATA/files/{name}", f"old {name}".encode())
    return f"{site.session}/resources/DATA"


def test_failed_job_leaves_the_archive_as_it_was(site: Site, data_resource: str):
    """Overwritten files (overwrite=true) get their old bytes and digests back, the deleted one
    comes back, and the new resource, file and subject are gone."""
    before = _archive_of(site)
    job = site.run("writes-then-fails", _writes("F", site.session) + "; exit 1")
    assert job["status"] == "Failed", job
    assert "WROTE" in site.stdout(job), "the job's writes did not all succeed"
    assert _archive_of(site) == before
    old_a = site.http.get(f"{site.url}{data_resource}/files/a.txt")
    assert old_a.content == b"old a.txt"
    assert site.undo_log(job["id"]) == (0, False)


def test_completed_job_keeps_everything_and_no_kept_bytes(site: Site, data_resource: str):
    job = site.run("writes-then-succeeds", _writes("C", site.session))
    assert job["status"] == "Complete", job
    assert site.files(data_resource) == {
        "a.txt": ("5", hashlib.md5(b"new a").hexdigest()),
        "c.txt": ("5", hashlib.md5(b"new c").hexdigest()),
    }
    assert site.http.get(f"{site.url}{data_resource}/files/a.txt").content == b"new a"
    assert set(site.files(f"{site.session}/resources/NEW_C")) == {"x.txt", "sub/y.txt"}
    assert "MADE_C" in site.subjects()
    assert site.undo_log(job["id"]) == (0, False)
    assert not any((site.server.data_dir / "job-writes").glob("*"))


def test_failed_upload_undoes_what_the_command_uploaded_itself(site: Site, data_resource: str):
    """The command's own upload landed; the output handler's upload is refused (its resource
    holds a folder where the output has a file): Failed (Upload), and neither result stays."""
    blocked = f"{site.session}/resources/BLOCKED/files/out.txt/taken"
    site.put(blocked, b"a folder named out.txt")
    before = _archive_of(site)
    job = site.run(
        "uploads-then-handler-fails",
        curl("PUT", f"{data_resource}/files/a.txt", "mine", overwrite="true")
        + f" && {curl('PUT', f'{site.session}/resources/OWN/files/own.txt', 'own')}"
        + " && echo out > /output/out.txt",
        outputs=[{"name": "o", "mount": "out", "required": True}],
        handlers=[{"name": "h", "accepts-command-output": "o", "as-a-child-of": "session",
                   "label": "BLOCKED"}],
    )  # fmt: skip
    assert job["status"] == "Failed (Upload)", job
    assert _archive_of(site) == before
    assert site.undo_log(job["id"]) == (0, False)


def test_roi_to_mask_whose_label_map_upload_fails_leaves_no_nifti(site: Site):
    """roi-to-mask uploads the scan's image NIfTI itself; when LABELMAP is then refused, the
    NIfTI goes too."""
    with connect(site.url, site.server.user, site.server.password) as session:
        [sample] = build_sample_project(session, PROJECT, subjects=1)
    wrappers = site.install(json.loads((REPO / "command_json/roi-to-mask.json").read_text()))
    experiment = f"/data/experiments/{sample.session_id}"
    assessors = site.http.get(f"{site.url}{experiment}/assessors",
                              params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    roi = next(a for a in assessors if a["label"] == sample.roi_collection)
    assessor = f"{experiment}/assessors/{roi['ID']}"
    site.put(f"{assessor}/resources/LABELMAP/files/masks.json/taken", b"blocks masks.json")
    listed = site.http.get(f"{site.url}{experiment}/scans", params={"format": "json"}).json()
    scans = [s["ID"] for s in listed["ResultSet"]["Result"]]
    nifti_before = {scan: site.resources(f"{experiment}/scans/{scan}") for scan in scans}
    answer = site.http.post(
        f"{site.url}/xapi/projects/{PROJECT}/wrappers/{wrappers['roi-to-mask-roi-collection']}"
        "/root/roi-collection/launch",
        json={"roi-collection": f"/archive/experiments/{sample.session_id}/assessors/{roi['ID']}"},
    )
    assert answer.status_code == 200, answer.text
    job = site.wait(answer.json()["id"])
    # Failed (Upload): the command exited 0, so its own last step, the NIfTI upload, landed.
    assert job["status"] == "Failed (Upload)", job
    assert "masks.json" in job["message"]
    assert {scan: site.resources(f"{experiment}/scans/{scan}") for scan in scans} == nifti_before
    assert all("NIFTI" not in labels for labels in nifti_before.values())
    assert set(site.files(f"{assessor}/resources/LABELMAP")) == {"masks.json/taken"}
    assert site.undo_log(job["id"]) == (0, False)


def test_killed_job_has_its_writes_undone(site: Site, data_resource: str):
    before = _archive_of(site)
    job = site.run("writes-then-killed", _writes("KL", site.session) + " && sleep 120",
                   running=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while "MADE_KL" not in site.subjects():  # its last write
        assert time.monotonic() < deadline, site.wait(job["id"])
        time.sleep(0.2)
    site.http.post(f"{site.url}/xapi/containers/{job['id']}/kill").raise_for_status()
    assert site.wait(job["id"], timeout=60)["status"] == "Killed"
    assert _archive_of(site) == before
    assert site.undo_log(job["id"]) == (0, False)


def test_failed_job_keeps_its_run_progress_in_ml_runs(site: Site, data_resource: str):
    """ML_RUNS/<run>/ files are progress records: kept (created and overwritten alike) when the
    job fails; the job's other writes are undone (a file at ML_RUNS's top level is refused by the
    server in the first place: tests/server/test_ml_roles.py)."""
    runs = f"/data/projects/{PROJECT}/resources/ML_RUNS"
    site.http.delete(f"{site.url}{runs}")
    site.put(f"{runs}/files/r0/status.json", b'{"state": "prepared"}')
    before = _archive_of(site)
    job = site.run("run-then-fails", " && ".join([
        curl("PUT", f"{runs}/files/r0/status.json", "killed", overwrite="true"),
        curl("PUT", f"{runs}/files/r1/latest.pt", "weights"),
        curl("PUT", f"{data_resource}/files/a.txt", "mine", overwrite="true"),
        "echo WROTE",
    ]) + "; exit 1")  # fmt: skip
    assert job["status"] == "Failed", job
    assert "WROTE" in site.stdout(job), "the job's writes did not all succeed"
    assert set(site.files(runs)) == {"r0/status.json", "r1/latest.pt"}
    assert site.http.get(f"{site.url}{runs}/files/r0/status.json").content == b"killed"
    assert _archive_of(site) == before
    assert site.undo_log(job["id"]) == (0, False)
    # ML_RUNS created by a failed job stays with its run folders; a run the job left saying
    # `running` (SIGKILLed, no time to say so) is marked failed with the reason.
    site.http.delete(f"{site.url}{runs}").raise_for_status()
    job = site.run("first-run-then-fails", " && ".join([
        curl("PUT", f"{runs}/files/r2/status.json", '{"state": "failed", "epoch": 2}'),
        curl("PUT", f"{runs}/files/r3/status.json", '{"state": "running", "epoch": 3}'),
    ]) + "; exit 1")  # fmt: skip
    assert job["status"] == "Failed", job
    assert set(site.files(runs)) == {"r2/status.json", "r3/status.json"}
    assert site.http.get(f"{site.url}{runs}/files/r2/status.json").json() == {
        "state": "failed", "epoch": 2}  # fmt: skip
    ended = site.http.get(f"{site.url}{runs}/files/r3/status.json")
    assert (ended.json()["state"], ended.json()["epoch"]) == ("failed", 3)
    assert ended.json()["message"].startswith("its job ended before the run could say how")
    assert site.files(runs)["r3/status.json"] == (str(len(ended.content)),
                                                 hashlib.md5(ended.content).hexdigest())
    assert site.undo_log(job["id"]) == (0, False)


def test_job_requeued_by_a_killed_server_starts_from_an_undone_archive(
    site: Site, data_resource: str
):
    """kill -9 the server while the job sleeps after its uploads: at restart its writes are
    undone and the same job runs again. Its second attempt makes the same writes, which the
    first attempt's would refuse (c.txt and NEW_K/x.txt exist); a kill then leaves the archive
    as it was before either attempt."""
    before = _archive_of(site)
    job = site.run("writes-then-naps", _writes("K", site.session) + " && sleep 120",
                   running=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while "MADE_K" not in site.subjects():  # its last write
        assert time.monotonic() < deadline, site.wait(job["id"])
        time.sleep(0.2)
    assert site.undo_log(job["id"])[0] > 0
    server = site.server
    server.process.kill()
    server.process.wait()
    server.process = None
    server.start()
    again = site.wait(job["id"], until=("Running",), timeout=30)
    assert ("Created", "requeued after a server restart (attempt 2 of 3)") in [
        (h["status"], h["message"]) for h in again["history"]]  # fmt: skip
    deadline = time.monotonic() + 60
    while "WROTE" not in site.stdout(again):  # the second attempt's log: all its writes landed
        assert time.monotonic() < deadline, site.wait(job["id"])
        time.sleep(0.2)
    site.http.post(f"{site.url}/xapi/containers/{job['id']}/kill").raise_for_status()
    assert site.wait(job["id"], timeout=60)["status"] == "Killed"
    assert _archive_of(site) == before
    assert site.http.get(f"{site.url}{data_resource}/files/a.txt").content == b"old a.txt"
    assert site.undo_log(job["id"]) == (0, False)


def test_a_crash_in_the_middle_of_an_undo_is_finished_at_start_up(start_xnat_server):
    """The server dies right after committing an undo, before any file moved back
    (XNAT_ML_FAULT=undo.committed): at start-up the journal finishes it."""
    crashing = Site(start_xnat_server("jobwrites-crash", env={"XNAT_ML_FAULT": "undo.committed"}))
    for name in ("a.txt", "b.txt"):
        crashing.put(f"{crashing.session}/resources/DATA/files/{name}", f"old {name}".encode())
    before = _archive_of(crashing)
    line = _writes("X", crashing.session) + "; sleep 2; exit 1"
    job = crashing.run("writes-fails-crashes", line, running=True)
    server = crashing.server
    assert server.process.wait(timeout=120) == -9  # killed itself at the fault point
    server.process, server.env = None, {}
    server.start()
    assert crashing.wait(job["id"], timeout=30)["status"] == "Failed"
    assert _archive_of(crashing) == before
    a_txt = crashing.http.get(f"{crashing.url}{crashing.session}/resources/DATA/files/a.txt")
    assert a_txt.content == b"old a.txt"
    assert crashing.undo_log(job["id"]) == (0, False)
