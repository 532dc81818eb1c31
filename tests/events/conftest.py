"""Fixtures of the Event Service and batch tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xnat_ml.cli import main

# A quick command for launch tests: echoes its session's label, fails for labels containing
# "bad", sleeps SECONDS first.
PROBE = {
    "name": "batch-probe",
    "description": "Echoes its session label; fails for labels containing 'bad'; sleeps on request",
    "version": "1",
    "schema-version": "1.0",
    "type": "docker",
    "image": "busybox:latest",
    "command-line": "sleep #SECONDS#; echo session #SESSION#; "
                    "case '#SESSION#' in *bad*) echo failing >&2; exit 3;; esac",
    "inputs": [
        {"name": "SESSION", "type": "string", "required": True},
        {"name": "SECONDS", "type": "number", "default-value": "0"},
    ],
    "xnat": [{
        "name": "batch-probe",
        "contexts": ["xnat:imageSessionData"],
        "external-inputs": [{"name": "session", "type": "Session", "required": True}],
        "derived-inputs": [{
            "name": "session-label", "type": "string", "derived-from-wrapper-input": "session",
            "derived-from-xnat-object-property": "label",
            "provides-value-for-command-input": "SESSION", "user-settable": False,
        }],
        "output-handlers": [],
    }],
}  # fmt: skip


@pytest.fixture(scope="session")
def install_command(xnat_server):
    """`install_command(doc) -> {wrapper name: id}`: installed (once) and, as an admin does,
    enabled site-wide; projects still enable it for themselves (`enable_in`)."""
    http, url = xnat_server.session(), xnat_server.url

    def install(doc: dict) -> dict[str, int]:
        if doc["name"] not in [c["name"] for c in http.get(f"{url}/xapi/commands").json()]:
            http.post(f"{url}/xapi/commands", json=doc).raise_for_status()
        [command] = [c for c in http.get(f"{url}/xapi/commands").json() if c["name"] == doc["name"]]
        wrappers = {w["name"]: int(w["id"]) for w in command["xnat"]}
        for wrapper in wrappers.values():
            http.put(f"{url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
        return wrappers

    return install


@pytest.fixture(scope="session")
def enable_in(xnat_server):
    """`enable_in(project, wrapper id)`: what a project owner does before using a command."""
    http, url = xnat_server.session(), xnat_server.url

    def enable(project: str, wrapper: int) -> None:
        http.put(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/enabled").raise_for_status()

    return enable


@pytest.fixture(scope="session")
def probe_wrapper(install_command) -> int:
    """The id of the batch-probe wrapper, installed once on the test server."""
    return install_command(PROBE)[PROBE["xnat"][0]["name"]]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(xnat_server, capsys):
    """Run `xnat-ml ARGS --url ... --user ... --password ...` in this process (real HTTP)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([*args, "--url", xnat_server.url, "--user", xnat_server.user,
                     "--password", xnat_server.password])  # fmt: skip
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run
