"""Who a job acts as and how long its credentials live; password changes and disabled users.

Scenario users: `id_member` (Member of the test project) launches jobs; `id_owner` (Owner) and
`id_user` change passwords. A job's alias token is read from its own stdout (the probe command
prints it, as a careless or hostile command could), then tried against the server.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

PROBE = {
    "name": "token-probe",
    "description": "Prints its alias token, sleeps SECONDS, exits with CODE",
    "version": "1",
    "schema-version": "1.0",
    "type": "docker",
    "image": "busybox:latest",
    "command-line": 'echo "token $XNAT_USER $XNAT_PASS"; sleep #SECONDS#; exit #CODE#',
    "inputs": [
        {"name": "SECONDS", "type": "number", "default-value": "0"},
        {"name": "CODE", "type": "number", "default-value": "0"},
    ],
    "xnat": [{
        "name": "token-probe",
        "contexts": ["xnat:projectData"],
        "external-inputs": [{"name": "project", "type": "Project", "required": True}],
        "output-handlers": [],
    }],
}  # fmt: skip
FINAL = {"Complete", "Failed", "Failed (Upload)", "Killed"}


def install_probe(server) -> int:
    """Install the probe (once per server) and enable it site-wide; its wrapper id."""
    http, url = server.session(), server.url
    if PROBE["name"] not in [c["name"] for c in http.get(f"{url}/xapi/commands").json()]:
        http.post(f"{url}/xapi/commands", json=PROBE).raise_for_status()
    [command] = [c for c in http.get(f"{url}/xapi/commands").json() if c["name"] == PROBE["name"]]
    wrapper = int(command["xnat"][0]["id"])
    http.put(f"{url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
    return wrapper


def launch(server, http, project: str, wrapper: int, seconds: int = 0, code: int = 0) -> int:
    server.session().put(
        f"{server.url}/xapi/projects/{project}/wrappers/{wrapper}/enabled"
    ).raise_for_status()
    response = http.post(
        f"{server.url}/xapi/projects/{project}/wrappers/{wrapper}/root/project/launch",
        json={"project": f"/data/projects/{project}", "SECONDS": seconds, "CODE": code},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def job_token(server, job_id: int, timeout: float = 30) -> tuple[str, str]:
    """The alias token the job printed (read through the logs route, as its user can)."""
    admin = server.session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = admin.get(f"{server.url}/xapi/containers/{job_id}/logs/stdout").text
        if found := re.search(r"token (\S+) (\S+)", log):
            return found[1], found[2]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} printed no token")


def wait_final(server, job_id: int, timeout: float = 30) -> dict:
    admin = server.session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = admin.get(f"{server.url}/xapi/containers/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']}")


def whoami(server, alias: str, secret: str) -> int:
    return requests.get(f"{server.url}/data/auth", auth=(alias, secret)).status_code


@pytest.fixture
def member(xnat_server, project):
    xnat_server.add_user("id_member", "pw-member", project, "Member")
    return xnat_server.session("id_member", "pw-member")


@pytest.mark.parametrize(("code", "status"), [(0, "Complete"), (3, "Failed")])
def test_a_jobs_token_dies_when_the_job_ends(xnat_server, project, member, code, status):
    wrapper = install_probe(xnat_server)
    job_id = launch(xnat_server, member, project, wrapper, code=code)
    alias, secret = job_token(xnat_server, job_id)
    job = wait_final(xnat_server, job_id)
    assert job["status"] == status
    assert job["user-id"] == "id_member"  # the launching user, not the wrapper's installer
    assert whoami(xnat_server, alias, secret) == 401
    # The job record users read never holds the secret (command line, inputs, history), nor
    # does the server's log.
    for record in (job, member.get(f"{xnat_server.url}/xapi/containers").json()):
        assert secret not in str(record)
    assert secret not in xnat_server.log_path.read_text(errors="replace")


def test_a_killed_jobs_token_and_what_it_minted_die_with_it(xnat_server, project, member):
    url = xnat_server.url
    wrapper = install_probe(xnat_server)
    job_id = launch(xnat_server, member, project, wrapper, seconds=60)
    alias, secret = job_token(xnat_server, job_id)
    response = requests.get(f"{url}/data/auth", auth=(alias, secret))
    assert response.status_code == 200 and "id_member" in response.text
    child = requests.get(f"{url}/data/services/tokens/issue", auth=(alias, secret)).json()
    cookie = requests.get(f"{url}/data/JSESSION", auth=(alias, secret)).text
    assert whoami(xnat_server, child["alias"], child["secret"]) == 200
    member.post(f"{url}/xapi/containers/{job_id}/kill").raise_for_status()
    assert wait_final(xnat_server, job_id)["status"] == "Killed"
    assert whoami(xnat_server, alias, secret) == 401
    assert whoami(xnat_server, child["alias"], child["secret"]) == 401
    assert requests.get(f"{url}/data/auth", cookies={"JSESSIONID": cookie}).status_code == 401


def test_deleting_a_project_revokes_its_jobs_tokens(xnat_server, member):
    url = xnat_server.url
    admin = xnat_server.session()
    admin.put(f"{url}/data/projects/IDDEL").raise_for_status()
    xnat_server.add_user("id_member", "pw-member", "IDDEL", "Member")
    wrapper = install_probe(xnat_server)
    job_id = launch(xnat_server, member, "IDDEL", wrapper, seconds=60)
    alias, secret = job_token(xnat_server, job_id)
    assert whoami(xnat_server, alias, secret) == 200
    try:
        admin.delete(f"{url}/data/projects/IDDEL").raise_for_status()
        assert whoami(xnat_server, alias, secret) == 401
    finally:
        admin.post(f"{url}/xapi/containers/{job_id}/kill")


def test_a_job_requeued_by_a_restart_loses_its_token(start_xnat_server):
    """Its next attempt runs on a fresh token; the first attempt's (an orphan may hold it)
    no longer opens the server."""
    server = start_xnat_server("identity-restart")
    server.session().put(f"{server.url}/data/projects/IDRS").raise_for_status()
    wrapper = install_probe(server)
    job_id = launch(server, server.session(), "IDRS", wrapper, seconds=60)
    alias, secret = job_token(server, job_id)
    assert whoami(server, alias, secret) == 200
    server.restart()
    assert whoami(server, alias, secret) == 401
    deadline = time.monotonic() + 30
    while (again := job_token(server, job_id)) == (alias, secret):  # the old log until it runs
        assert time.monotonic() < deadline, "the requeued job never ran"
        time.sleep(0.2)
    assert whoami(server, *again) == 200
    server.session().post(f"{server.url}/xapi/containers/{job_id}/kill").raise_for_status()
    assert wait_final(server, job_id)["status"] == "Killed"
    assert whoami(server, *again) == 401


def test_a_token_cannot_mint_a_token_that_outlives_it(xnat_server):
    url = xnat_server.url
    xnat_server.add_user("id_minter", "pw-minter")
    user = xnat_server.session("id_minter", "pw-minter")
    parent = user.get(f"{url}/data/services/tokens/issue").json()
    child = requests.get(
        f"{url}/data/services/tokens/issue", auth=(parent["alias"], parent["secret"])
    ).json()
    assert child["estimatedExpirationTime"] <= parent["estimatedExpirationTime"]
    grandchild = requests.get(
        f"{url}/data/services/tokens/issue", auth=(child["alias"], child["secret"])
    ).json()
    user.get(f"{url}/data/services/tokens/invalidate/{parent['alias']}").raise_for_status()
    for token in (parent, child, grandchild):
        assert whoami(xnat_server, token["alias"], token["secret"]) == 401
    # A token minted with the password is independent of the others.
    other = user.get(f"{url}/data/services/tokens/issue").json()
    assert whoami(xnat_server, other["alias"], other["secret"]) == 200


def _login(url: str, username: str, password: str) -> requests.Session:
    http = requests.Session()
    response = http.post(
        f"{url}/data/services/auth", data={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return http


def test_changing_ones_password_ends_other_sessions_and_tokens(xnat_server):
    url = xnat_server.url
    xnat_server.add_user("id_user", "old-password")
    browser, laptop = _login(url, "id_user", "old-password"), _login(url, "id_user", "old-password")
    token = laptop.get(f"{url}/data/services/tokens/issue").json()
    assert whoami(xnat_server, token["alias"], token["secret"]) == 200

    # The user's own change needs the current password (as XNAT's self-service update does).
    refused = browser.put(f"{url}/xapi/users/id_user", json={"password": "new-password"})
    assert refused.status_code == 400 and "current password" in refused.text.lower()
    changed = browser.put(
        f"{url}/xapi/users/id_user",
        json={"password": "new-password", "currentPassword": "old-password"},
    )
    assert changed.status_code == 200, changed.text
    assert "password" not in changed.text.lower()

    assert browser.get(f"{url}/data/auth").status_code == 200  # the session that changed it
    assert laptop.get(f"{url}/data/auth").status_code == 401
    assert whoami(xnat_server, token["alias"], token["secret"]) == 401
    assert whoami(xnat_server, "id_user", "old-password") == 401
    assert whoami(xnat_server, "id_user", "new-password") == 200


def test_an_admin_resets_a_password_and_others_may_not(xnat_server):
    url = xnat_server.url
    xnat_server.add_user("id_user2", "pw-one")
    xnat_server.add_user("id_other", "pw-other")
    session = _login(url, "id_user2", "pw-one")
    other = xnat_server.session("id_other", "pw-other")
    response = other.put(f"{url}/xapi/users/id_user2", json={"password": "stolen"})
    assert response.status_code == 403
    response = other.put(f"{url}/xapi/users/id_other", json={"enabled": False})
    assert response.status_code == 403 and "enabled" in response.text
    admin = xnat_server.session()
    assert admin.put(f"{url}/xapi/users/id_user2", json={"password": "pw-two"}).status_code == 200
    assert session.get(f"{url}/data/auth").status_code == 401
    assert whoami(xnat_server, "id_user2", "pw-two") == 200
    assert admin.put(f"{url}/xapi/users/nobody_here", json={"password": "x"}).status_code == 404
    assert admin.put(f"{url}/xapi/users/id_user2", json={"password": ""}).status_code == 400
    assert admin.put(f"{url}/xapi/users/id_user2", json={"shoeSize": 9}).status_code == 400
    assert admin.put(f"{url}/xapi/users/id_user2", json={}).status_code == 304
    assert admin.put(f"{url}/xapi/users/admin/enabled/false").status_code == 409


def test_a_disabled_user_cannot_log_in_or_use_tokens(xnat_server):
    url = xnat_server.url
    admin = xnat_server.session()
    xnat_server.add_user("id_disabled", "pw-dis")
    session = _login(url, "id_disabled", "pw-dis")
    token = session.get(f"{url}/data/services/tokens/issue").json()
    other = xnat_server.session("id_disabled", "pw-dis")
    assert other.put(f"{url}/xapi/users/id_disabled/enabled/false").status_code == 403

    admin.put(f"{url}/xapi/users/id_disabled/enabled/false").raise_for_status()
    assert admin.get(f"{url}/xapi/users/id_disabled/enabled").json() is False
    assert session.get(f"{url}/data/auth").status_code == 401
    assert whoami(xnat_server, token["alias"], token["secret"]) == 401
    response = requests.post(
        f"{url}/data/services/auth", data={"username": "id_disabled", "password": "pw-dis"}
    )
    assert response.status_code == 401

    # Enabling again lets the user log in, but what was ended stays ended.
    admin.put(f"{url}/xapi/users/id_disabled/enabled/true").raise_for_status()
    assert session.get(f"{url}/data/auth").status_code == 401
    assert whoami(xnat_server, token["alias"], token["secret"]) == 401
    assert whoami(xnat_server, "id_disabled", "pw-dis") == 200
    assert admin.put(f"{url}/xapi/users/id_disabled/enabled/maybe").status_code == 400
