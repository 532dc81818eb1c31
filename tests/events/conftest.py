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
def probe_wrapper(xnat_server) -> int:
    """The id of the batch-probe wrapper, installed once on the test server."""
    http, url = xnat_server.session(), xnat_server.url
    if PROBE["name"] not in [c["name"] for c in http.get(f"{url}/xapi/commands").json()]:
        http.post(f"{url}/xapi/commands", json=PROBE).raise_for_status()
    [command] = [c for c in http.get(f"{url}/xapi/commands").json() if c["name"] == PROBE["name"]]
    return int(command["xnat"][0]["id"])


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
