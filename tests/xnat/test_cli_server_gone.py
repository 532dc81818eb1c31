"""Every verb that talks to XNAT says in one line that the server is gone, exit status 1:
against a server that was stopped, and when the server dies under the verb."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

VERBS = (
    ["sample-data", "--project", "GONE", "--subjects", "1"],
    ["events", "list", "--project", "GONE"],
    ["events", "install", "--project", "GONE"],
    ["jobs", "--project", "GONE"],
    ["batch", "run", "--project", "GONE", "--command", "roi-to-mask"],
)


def xnat_ml(*args: str, url: str, password: str = "admin") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "xnat_ml", *args,
               "--url", url, "--user", "admin", "--password", password]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


NOOP = {
    "name": "noop", "version": "1", "schema-version": "1.0", "type": "docker",
    "image": "busybox:latest", "command-line": "true", "inputs": [], "outputs": [],
    "xnat": [{"name": "noop-resource", "contexts": ["xnat:resourceCatalog"],
              "external-inputs": [{"name": "resource", "type": "Resource", "required": True}],
              "derived-inputs": [], "output-handlers": []}],
}  # fmt: skip


def install_noop(server, project: str) -> int:
    """Install the no-op command and enable it site-wide and in `project`; its wrapper id."""
    http, url = server.session(), server.url
    http.post(f"{url}/xapi/commands", json=NOOP).raise_for_status()
    [command] = http.get(f"{url}/xapi/commands", params={"name": "noop"}).json()
    wrapper = command["xnat"][0]["id"]
    for scope in ("", f"/projects/{project}"):
        http.put(f"{url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()
    return wrapper


def assert_one_line(done: subprocess.CompletedProcess, url: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("xnat-ml: error: "), lines[0]
    assert "cannot" in lines[0] and url.split("//")[1] in lines[0], lines[0]


@pytest.fixture(scope="module")
def stopped_url(start_xnat_server) -> str:
    server = start_xnat_server("gone")
    server.stop()
    return server.url


@pytest.mark.parametrize("verb", VERBS, ids=lambda verb: " ".join(verb[:2]))
def test_a_verb_against_a_stopped_server_prints_one_line(stopped_url, verb):
    done = xnat_ml(*verb, url=stopped_url)
    assert_one_line(done, stopped_url)


def test_sample_data_when_the_server_dies_under_it(start_xnat_server):
    """The server dies (killed at a fault point) in the middle of `sample-data`: its project
    exists, the upload of its label map is cut off."""
    server = start_xnat_server("dies", env={"XNAT_ML_FAULT": "event-stored"})
    http, url = server.session(), server.url
    http.put(f"{url}/data/projects/DIES").raise_for_status()
    wrapper = install_noop(server, "DIES")
    on_resources = {
        "name": "DIES: any resource",
        "event-filter": {"event-type": "ResourceEvent", "project-ids": ["DIES"]},
        "action-key": f"org.nrg.containers.services.CommandActionProvider:{wrapper}",
    }
    assert http.post(f"{url}/xapi/events/subscription", json=on_resources).status_code == 201

    done = xnat_ml("sample-data", "--project", "DIES", "--subjects", "1", url=url)
    deadline = time.monotonic() + 30
    while server.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.process.poll() == -signal.SIGKILL, "the server was not killed at the fault point"
    assert_one_line(done, url)
