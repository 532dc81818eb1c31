"""Issue 15's findings 2 and 3 replayed by a job's own script, on local, Docker and Slurm.

Finding 3: a job's credentials were as strong as its launcher's everywhere. Here a job launched
in P by the site admin, and one launched by a Member of both P and Q, use their own XNAT_HOST,
XNAT_USER and XNAT_PASS to create a user, make someone Owner of Q, change another user's
password, write a file into Q and mint a token for another user: 403 each, and none of it
happened; their writes in P work. Finding 2: both launches carry a hostile `Host:` header (a
port where nothing listens); the job is told the server's own bound address all the same, and
reaches the server there.
"""

from __future__ import annotations

import json

import pytest
from e2e import IMAGE, backend_setup, install_enabled, job_logs, start_backend_server, wait_job

from xnat_ml.server.process import free_port

# Every request of TRIES (a JSON list of [method, path, body]) with the job's own credentials.
TRY = (
    "import json, os, sys, requests; h = os.environ['XNAT_HOST']; s = requests.Session(); "
    "s.auth = (os.environ['XNAT_USER'], os.environ['XNAT_PASS']); "
    "codes = [s.request(m, h + p, json=b).status_code for m, p, b in json.loads(sys.argv[1])]; "
    "print(json.dumps({'host': h, 'codes': codes}))"
)
COMMAND = {
    "name": "scope-try", "version": "1", "schema-version": "1.0", "type": "docker",
    "image": IMAGE, "command-line": f'python -c "{TRY}" #TRIES#',
    "inputs": [{"name": "TRIES", "type": "string", "required": True}],
    "xnat": [{"name": "scope-try-project", "contexts": ["xnat:projectData"],
              "external-inputs": [{"name": "project", "type": "Project", "required": True}]}],
}  # fmt: skip
P, Q = "SCOPE_P", "SCOPE_Q"
VICTIM, MEMBER = ("scope_victim", "victim-pw"), ("scope_member", "member-pw")
NEW_USER = "made_in_job"


@pytest.fixture(
    scope="module",
    params=[
        "local",
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
    ],
)
def server(request, start_xnat_server):
    """A server on the parameter's backend (no SITE_URL: jobs get the bound address) with
    projects P and Q (the admin owns both), a victim user, a Member of P and Q, and the
    command enabled in P."""
    kind = request.param
    options, env = backend_setup(request, kind)
    server = start_backend_server(start_xnat_server, f"scope-{kind}", kind, options, env)
    admin = server.session()
    for project in (P, Q):
        admin.put(f"{server.url}/data/projects/{project}").raise_for_status()
        server.add_user(*MEMBER, project, "Member")
    server.add_user(*VICTIM)
    server.wrapper = install_enabled(server, P, COMMAND)["scope-try-project"]
    return server


def _run_in_p(server, who: tuple[str, str] | None, tag: str) -> dict:
    """Launch the command in P as `who` (the admin by default) with a hostile Host header;
    what its script printed."""
    tries = [
        ("POST", "/xapi/users", {"username": NEW_USER, "password": "made-in-job-pw"}),
        ("PUT", f"/data/projects/{Q}/users/Owners/{VICTIM[0]}", None),
        ("PUT", f"/xapi/users/{VICTIM[0]}", {"password": "taken-over"}),
        ("PUT", f"/data/projects/{Q}/resources/FROM_JOB/files/{tag}.json", {"from": "job"}),
        ("GET", f"/data/services/tokens/issue/user/{VICTIM[0]}", None),
        ("PUT", f"/data/projects/{P}/subjects/job_{tag}", None),
        ("PUT", f"/data/projects/{P}/resources/FROM_JOB/files/{tag}.json", {"from": "job"}),
    ]  # fmt: skip
    http = server.session(*who) if who else server.session()
    url = f"{server.url}/xapi/projects/{P}/wrappers/{server.wrapper}/root/project/launch"
    launched = http.post(url, json={"project": P, "TRIES": json.dumps(tries)},
                         headers={"Host": f"127.0.0.1:{free_port()}"})  # fmt: skip
    assert launched.status_code == 200, launched.text
    job_id = launched.json()["id"]
    job = wait_job(server, job_id)
    assert job["status"] == "Complete", (job, job_logs(server, job_id))
    stdout = server.session().get(f"{server.url}/xapi/containers/{job_id}/logs/stdout").text
    return json.loads(stdout.strip().splitlines()[-1])


def _nothing_happened_outside_p(server, tag: str) -> None:
    admin, url = server.session(), server.url
    assert admin.get(f"{url}/xapi/users/{NEW_USER}").status_code == 404
    assert server.session(*VICTIM).get(f"{url}/data/auth").ok  # the password as it was
    owners = admin.get(f"{url}/data/projects/{Q}/users", params={"format": "json"}).text
    assert VICTIM[0] not in owners
    assert admin.get(f"{url}/data/projects/{Q}/resources/FROM_JOB/files/{tag}.json") \
        .status_code == 404  # fmt: skip
    assert admin.get(f"{url}/data/projects/{P}/subjects/job_{tag}").status_code == 200
    assert admin.get(f"{url}/data/projects/{P}/resources/FROM_JOB/files/{tag}.json").json() \
        == {"from": "job"}  # fmt: skip


@pytest.mark.parametrize("launcher", ["admin", "member"])
def test_a_jobs_own_credentials_act_only_in_its_project(server, launcher):
    who = MEMBER if launcher == "member" else None
    seen = _run_in_p(server, who, launcher)
    assert seen["host"] == server.url  # the bound address, never the Host header's
    assert seen["codes"][:5] == [403] * 5, seen
    assert seen["codes"][5] == 201 and seen["codes"][6] in (200, 201), seen
    _nothing_happened_outside_p(server, launcher)
