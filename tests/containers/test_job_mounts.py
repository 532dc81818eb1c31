"""A job's mounts (staged inputs, output folders) go when it ends, however it ends: Complete,
Failed, Killed, and when a restart of the server requeues it; its logs stay. Local backend,
real server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")

# Copies the session's DATA resource from /input to /output, then runs #ACTION#.
COPIER = {
    "name": "copier", "version": "1", "schema-version": "1.0", "type": "docker",
    "image": "busybox:latest",
    "command-line": "cp /input/in.txt /output/copy.txt; sh -c #ACTION#",  # one quoted word
    "mounts": [{"name": "in", "writable": False, "path": "/input"},
               {"name": "out", "writable": True, "path": "/output"}],
    "inputs": [{"name": "ACTION", "type": "string", "required": True}],
    "outputs": [{"name": "copy", "mount": "out", "required": False}],
    "xnat": [{
        "name": "copier-session", "contexts": ["xnat:imageSessionData"],
        "external-inputs": [{"name": "session", "type": "Session", "required": True}],
        "derived-inputs": [{
            "name": "data", "type": "Resource", "derived-from-wrapper-input": "session",
            "matcher": "@.label == 'DATA'", "provides-files-for-command-mount": "in",
            "user-settable": False,
        }],
        "output-handlers": [{"name": "h", "accepts-command-output": "copy",
                             "as-a-child-of": "session", "label": "COPY"}],
    }],
}  # fmt: skip


class Site:
    """An own server (it is restarted) with project MOUNTS, one session holding DATA/in.txt,
    and the copier command installed and enabled."""

    def __init__(self, server) -> None:
        self.server, self.url, self.http = server, server.url, server.session()
        base = f"{self.url}/data/projects/MOUNTS"
        self.http.put(base).raise_for_status()
        self.http.put(f"{base}/subjects/S1").raise_for_status()
        made = self.http.put(f"{base}/subjects/S1/experiments/S1_MR",
                             params={"xsiType": "xnat:mrSessionData"})  # fmt: skip
        made.raise_for_status()
        self.session_id = made.text.strip()
        data = f"{self.url}/data/experiments/{self.session_id}/resources/DATA/files/in.txt"
        self.http.put(data, data=b"payload\n").raise_for_status()
        self.http.post(f"{self.url}/xapi/commands", json=COPIER).raise_for_status()
        [command] = self.http.get(f"{self.url}/xapi/commands", params={"name": "copier"}).json()
        self.wrapper = command["xnat"][0]["id"]
        for scope in ("", "/projects/MOUNTS"):
            self.http.put(f"{self.url}/xapi{scope}/wrappers/{self.wrapper}/enabled")

    def launch(self, action: str) -> int:
        answer = self.http.post(
            f"{self.url}/xapi/projects/MOUNTS/wrappers/{self.wrapper}/root/session/launch",
            json={"session": self.session_id, "ACTION": action},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    def job(self, job_id: int) -> dict:
        return self.http.get(f"{self.url}/xapi/containers/{job_id}").json()

    def wait(self, job_id: int, statuses=FINAL, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in statuses:
            assert time.monotonic() < deadline, f"container {job_id} still {job['status']}"
            time.sleep(0.1)
        return job

    def job_dir(self, job_id: int) -> Path:
        return self.server.data_dir / "containers" / str(job_id)

    def assert_mounts_gone(self, job_id: int) -> None:
        folder = self.job_dir(job_id)
        assert not (folder / "mounts").exists(), sorted(p.name for p in folder.rglob("*"))
        assert (folder / "logs").is_dir()


@pytest.fixture(scope="module")
def site(start_xnat_server) -> Site:
    return Site(start_xnat_server("mounts"))


def test_mounts_go_when_a_job_completes(site: Site):
    job = site.wait(site.launch("echo done"))
    assert job["status"] == "Complete", job
    site.assert_mounts_gone(job["id"])


def test_mounts_go_when_a_job_fails(site: Site):
    job = site.wait(site.launch("echo broken >&2; exit 3"))
    assert job["status"] == "Failed", job
    site.assert_mounts_gone(job["id"])
    assert "broken" in site.http.get(f"{site.url}/xapi/containers/{job['id']}/logs/stderr").text


def test_mounts_go_when_a_job_is_killed(site: Site):
    job_id = site.launch("sleep 60")
    site.wait(job_id, ("Running",))
    assert (site.job_dir(job_id) / "mounts" / "in" / "in.txt").read_text() == "payload\n"
    assert site.http.post(f"{site.url}/xapi/containers/{job_id}/kill").status_code == 200
    assert site.wait(job_id, timeout=30)["status"] == "Killed"
    site.assert_mounts_gone(job_id)


def test_a_job_requeued_by_a_restart_starts_on_fresh_mounts(site: Site):
    """Its first attempt's mounts go at the restart: the second finds only what it makes."""
    job_id = site.launch('echo "$XNAT_USER" >> /output/tokens; sleep 60')  # one token an attempt
    site.wait(job_id, ("Running",))
    tokens = site.job_dir(job_id) / "mounts" / "out" / "tokens"
    deadline = time.monotonic() + 30
    while not tokens.exists() or not tokens.read_text().endswith("\n"):
        assert time.monotonic() < deadline, "the first attempt wrote no token"
        time.sleep(0.1)
    first = tokens.read_text()
    site.server.restart()
    job = site.wait(job_id, ("Running",))
    assert "requeued after a server restart" in job["history"][2]["message"], job
    while not tokens.exists() or tokens.read_text() in ("", first):
        assert time.monotonic() < deadline + 30, "the second attempt wrote no token"
        time.sleep(0.1)
    assert len(tokens.read_text().split()) == 1, "the second attempt inherited the first's mount"
    assert site.http.post(f"{site.url}/xapi/containers/{job_id}/kill").status_code == 200
    assert site.wait(job_id, timeout=30)["status"] == "Killed"
    site.assert_mounts_gone(job_id)
