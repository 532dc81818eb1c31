"""Hostile launch values and the job environment, end to end on local, Docker and Slurm.

A Member's string input such as `x'; touch MARK; echo '` must reach the program as one literal
argument (the program prints its argv), run nothing on the host (the marker file never appears),
and the job's environment must hold only the documented list: the server runs with
XNAT_ML_ADMIN_PASSWORD and a canary variable in its own environment, and neither may reach a job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e import IMAGE, backend_setup, install_enabled, wait_job

from xnat_ml.containers.backends.base import BASE_ENV

ADMIN_PASSWORD = "admin-pw-must-not-leak"
CANARY = ("XNAT_ML_TEST_CANARY", "canary-must-not-leak")
HOSTILE = [
    "x'; touch MARK; echo '", "$(touch MARK)", "`touch MARK`", "a; touch MARK",
    "a | touch MARK", "a && touch MARK", "*", "~", "line\ntouch MARK", '"; touch MARK; echo "',
]  # fmt: skip
PRINT = (
    "import json, os, sys; "
    "print(json.dumps({'argv': sys.argv[1:], "
    "'env': {k: v for k, v in os.environ.items() if k != 'XNAT_PASS'}, "
    "'token': os.environ.get('XNAT_PASS')}))"
)
PROBE = {
    "name": "probe", "version": "1", "schema-version": "1.0", "type": "docker", "image": IMAGE,
    "command-line": f"python -c \"{PRINT}\" #V# '#V#' \"#V#\" #F# #RAW#",
    "environment-variables": {"PROBE_VALUE": "#V#"},
    "inputs": [
        {"name": "V", "type": "string", "required": True},
        {"name": "F", "type": "string", "command-line-flag": "--f", "command-line-separator": "="},
        {"name": "RAW", "type": "string"},
    ],
    "xnat": [{"name": "probe-project", "contexts": ["xnat:projectData"],
              "external-inputs": [{"name": "project", "type": "Project", "required": True}]}],
}  # fmt: skip
# What the job's own programs set: /bin/sh, and Python in a C locale (PEP 538 coercion).
SHELL_SET = {"PWD", "OLDPWD", "SHLVL", "_", "LC_CTYPE"}
JOB_ENV = {"XNAT_HOST", "XNAT_USER", "XNAT_PASS", "XNAT_WORKFLOW_ID", "PROBE_VALUE"}


@pytest.fixture(
    scope="module",
    params=[
        "local",
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
    ],
)
def server(request, start_xnat_server):
    """A server on the parameter's backend, with secrets in its own environment; the probe's
    RAW input is spliced unquoted (the admin's explicit choice)."""
    kind = request.param
    options, env = backend_setup(request, kind)
    env.update({"XNAT_ML_ADMIN_PASSWORD": ADMIN_PASSWORD, CANARY[0]: CANARY[1]})
    if kind == "docker":
        image = request.getfixturevalue("dockerd").client().images.get(IMAGE)
        image_env = image.attrs["Config"].get("Env") or []
        allowed = {line.split("=", 1)[0] for line in image_env} | {"HOSTNAME", "HOME", "PATH"}
    elif kind == "slurm":
        allowed = set(BASE_ENV) | {"SLURM_*", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"}
    else:
        allowed = set(BASE_ENV) | {"XNAT_ML_LOCAL_JOB"}
    name = f"literal-{kind}"
    server = start_xnat_server(name, ["--backend", kind, "--raw-input", "probe:RAW"]
                               + [a for k, v in options.items()
                                  for a in ("--backend-option", f"{k}={v}")], env)  # fmt: skip
    server.allowed_env = allowed | JOB_ENV | SHELL_SET
    project = f"LIT_{kind.upper()}"
    server.session().put(f"{server.url}/data/projects/{project}").raise_for_status()
    server.project = project
    server.wrapper = install_enabled(server, project, PROBE)["probe-project"]
    return server


def _launch(server, values: dict) -> int:
    url = f"{server.url}/xapi/projects/{server.project}/wrappers/{server.wrapper}/root/project"
    url += "/launch"
    answer = server.session().post(url, json={"project": server.project, **values})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def _probe_output(server, job_id: int) -> dict:
    job = wait_job(server, job_id)
    stdout = server.session().get(f"{server.url}/xapi/containers/{job_id}/logs/stdout").text
    assert job["status"] == "Complete", (job, stdout)
    return json.loads(stdout.strip().splitlines()[-1])


def _allowed(name: str, allowed: set[str]) -> bool:
    return name in allowed or (name.startswith("SLURM_") and "SLURM_*" in allowed)


def test_hostile_values_reach_the_program_as_one_literal_argument(server, tmp_path: Path):
    marker = tmp_path / "marker"
    values = [v.replace("MARK", str(marker)) for v in HOSTILE]
    ids = [_launch(server, {"V": value, "F": value}) for value in values]
    for value, job_id in zip(values, ids, strict=True):
        seen = _probe_output(server, job_id)
        assert seen["argv"] == [value, value, value, f"--f={value}"], value
        assert seen["env"]["PROBE_VALUE"] == value
    assert not marker.exists(), "a launch value ran a command on the host"


def test_job_environment_holds_only_the_documented_list(server):
    seen = _probe_output(server, _launch(server, {"V": "env"}))
    assert seen["token"], "the job has no XNAT_PASS"
    extra = sorted(k for k in seen["env"] if not _allowed(k, server.allowed_env))
    assert extra == [], f"variables outside the list reached the job: {extra}"
    assert CANARY[0] not in seen["env"]
    dumped = json.dumps(seen)
    assert ADMIN_PASSWORD not in dumped and CANARY[1] not in dumped
    assert seen["env"]["XNAT_USER"] != "admin"  # an alias token, not the password


def test_job_records_hold_no_environment(server):
    job_id = _launch(server, {"V": "record"})
    token = _probe_output(server, job_id)["token"]
    record = server.session().get(f"{server.url}/xapi/containers/{job_id}").text
    assert token not in record and ADMIN_PASSWORD not in record and CANARY[1] not in record


def test_raw_inputs_are_spliced_as_several_words_only_when_the_server_says(server):
    seen = _probe_output(server, _launch(server, {"V": "v", "RAW": "two words"}))
    assert seen["argv"] == ["v", "v", "v", "two", "words"]
