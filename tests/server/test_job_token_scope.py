"""A job's token acts only inside its job's project and is never a site admin.

Real jobs on the local backend: the token-probe command (test_identity.py) prints its alias
token and sleeps; the test then uses that token, a token minted with it and a session opened
with it, as a hostile script inside the job would, against every route that manages people,
settings, commands or other projects: 403 each, and nothing changed. Inside its project the job
still works. A Member's job in P cannot write into Q, where the Member is also a Member.
"""

from __future__ import annotations

import itertools
import re

import pytest
import requests
from test_identity import install_probe, job_token, launch, wait_final

# A job that tries, with its own environment, to create a user and to write in its project.
SCRIPT = (
    "import os, sys, requests; h = os.environ['XNAT_HOST']; "
    "a = (os.environ['XNAT_USER'], os.environ['XNAT_PASS']); print('host', h); "
    "print('users', requests.post(h + '/xapi/users', auth=a, "
    "json={'username': 'made_in_job', 'password': 'made-in-job-pw'}).status_code); "
    "print('own', requests.put(h + '/data/projects/' + sys.argv[1] + '/subjects/in_job', "
    "auth=a).status_code)"
)
TRY = {
    "name": "scope-try", "description": "Tries its token", "version": "1",
    "schema-version": "1.0", "type": "docker", "image": "busybox:latest",
    "command-line": f'python -c "{SCRIPT}" #PROJECT#',
    "inputs": [{"name": "PROJECT", "type": "string", "required": True}],
    "xnat": [{"name": "scope-try", "contexts": ["xnat:projectData"],
              "external-inputs": [{"name": "project", "type": "Project", "required": True}],
              "output-handlers": []}],
}  # fmt: skip

_numbers = itertools.count(1)


@pytest.fixture
def other_project(xnat_server):
    """A second fresh project Q (admin is its Owner), deleted after."""
    project_id = f"JOBQ{next(_numbers):03d}"
    admin = xnat_server.session()
    admin.put(f"{xnat_server.url}/data/projects/{project_id}").raise_for_status()
    yield project_id
    admin.delete(f"{xnat_server.url}/data/projects/{project_id}")


def credentials(url: str, alias: str, secret: str) -> dict[str, requests.Session]:
    """The job's token, a token minted with it, and a web session opened with it."""
    token = requests.Session()
    token.auth = (alias, secret)
    child_body = token.get(f"{url}/data/services/tokens/issue").json()
    child = requests.Session()
    child.auth = (child_body["alias"], child_body["secret"])
    session_id = token.get(f"{url}/data/JSESSION").text
    cookie = requests.Session()
    cookie.cookies.set("JSESSIONID", session_id)
    return {"token": token, "minted token": child, "session": cookie}


def test_an_admins_job_is_no_admin_outside_its_project(xnat_server, project, other_project):
    url, admin = xnat_server.url, xnat_server.session()
    xnat_server.add_user("scope_victim", "victim-pw")
    wrapper = install_probe(xnat_server)
    job_id = launch(xnat_server, admin, project, wrapper, seconds=120)
    alias, secret = job_token(xnat_server, job_id)
    p, q = project, other_project
    subscription = {
        "name": f"{q}: from a job", "event-filter": {"event-type": "SubjectEvent",
                                                    "project-ids": [q]},
        "action-key": f"org.nrg.containers.services.CommandActionProvider:{wrapper}",
    }  # fmt: skip
    attempts = [
        ("POST", "/xapi/users", {"json": {"username": "scope_made", "password": "made-pw"}}),
        ("PUT", "/xapi/users/admin", {"json": {"password": "taken-over"}}),
        ("PUT", "/xapi/users/scope_victim", {"json": {"password": "taken-over"}}),
        ("PUT", "/xapi/users/scope_victim/enabled/false", {}),
        ("PUT", f"/data/projects/{q}/users/Owners/scope_victim", {}),
        ("PUT", f"/data/projects/{p}/users/Owners/scope_victim", {}),
        ("DELETE", f"/data/projects/{p}/users/Owners/admin", {}),
        ("PUT", "/xapi/events/prefs", {"json": {"enabled": False}}),
        ("POST", "/xapi/commands", {"json": {"name": "from-a-job"}}),
        ("PUT", f"/xapi/wrappers/{wrapper}/disabled", {}),
        ("PUT", f"/xapi/projects/{p}/wrappers/{wrapper}/disabled", {}),
        ("POST", f"/xapi/projects/{q}/events/subscription", {"json": subscription}),
        ("POST", "/xapi/events/subscription", {"json": subscription}),
        ("GET", "/data/services/tokens/issue/user/scope_victim", {}),
        ("PUT", "/data/projects/JOBNEWPROJ", {}),
        ("PUT", f"/data/projects/{q}/subjects/from_job", {}),
        ("GET", f"/data/projects/{q}/subjects", {"params": {"format": "json"}}),
    ]
    try:
        for kind, http in credentials(url, alias, secret).items():
            for method, path, extra in attempts:
                answer = http.request(method, f"{url}{path}", **extra)
                assert answer.status_code == 403, (kind, method, path, answer.text)
            # Inside its project the job keeps its launcher's rights (here: an Owner's).
            made = http.put(f"{url}/data/projects/{p}/subjects/by_{kind.replace(' ', '_')}")
            assert made.status_code in (200, 201), (kind, made.text)
            listed = http.get(f"{url}/data/projects", params={"format": "json"}).json()
            assert [row["ID"] for row in listed["ResultSet"]["Result"]] == [p], kind
            access = http.get(f"{url}/xapi/access/projects").json()
            assert [row["ID"] for row in access] == [p], kind
    finally:
        admin.post(f"{url}/xapi/containers/{job_id}/kill")
    wait_final(xnat_server, job_id)

    # Nothing changed: no user, the passwords and roles as they were, settings and commands too.
    assert admin.get(f"{url}/xapi/users/scope_made").status_code == 404
    assert requests.get(f"{url}/data/auth", auth=("scope_victim", "victim-pw")).ok
    assert requests.get(f"{url}/data/auth", auth=(xnat_server.user, xnat_server.password)).ok
    members = admin.get(f"{url}/data/projects/{q}/users", params={"format": "json"}).text
    assert "scope_victim" not in members
    assert admin.get(f"{url}/xapi/events/prefs").json()["enabled"] is True
    assert admin.get(f"{url}/xapi/wrappers/{wrapper}/enabled").json() is True
    assert admin.get(f"{url}/data/projects/JOBNEWPROJ").status_code == 404
    assert admin.get(f"{url}/data/projects/{q}/subjects/from_job").status_code == 404


def test_a_members_job_in_p_cannot_write_into_q(xnat_server, project, other_project):
    url = xnat_server.url
    xnat_server.add_user("scope_member", "member-pw", project, "Member")
    xnat_server.add_user("scope_member", "member-pw", other_project, "Member")
    member = xnat_server.session("scope_member", "member-pw")
    assert member.put(f"{url}/data/projects/{other_project}/subjects/by_hand").status_code == 201
    wrapper = install_probe(xnat_server)
    job_id = launch(xnat_server, member, project, wrapper, seconds=120)
    alias, secret = job_token(xnat_server, job_id)
    try:
        for kind, http in credentials(url, alias, secret).items():
            into_q = http.put(f"{url}/data/projects/{other_project}/subjects/by_job")
            assert into_q.status_code == 403, (kind, into_q.text)
            read_q = http.get(f"{url}/data/projects/{other_project}/subjects/by_hand")
            assert read_q.status_code == 403, (kind, read_q.text)
            into_p = http.put(f"{url}/data/projects/{project}/subjects/by_{kind[0]}_job")
            assert into_p.status_code in (200, 201), (kind, into_p.text)
    finally:
        member.post(f"{url}/xapi/containers/{job_id}/kill")
    wait_final(xnat_server, job_id)
    admin = xnat_server.session()
    assert admin.get(f"{url}/data/projects/{other_project}/subjects/by_job").status_code == 404


def test_a_job_run_by_an_admin_uses_its_token_as_scoped(xnat_server, project):
    """End to end: the job's own script, with its XNAT_HOST/USER/PASS, cannot create a user but
    writes in its project, at the address the server listens on."""
    url, admin = xnat_server.url, xnat_server.session()
    if TRY["name"] not in [c["name"] for c in admin.get(f"{url}/xapi/commands").json()]:
        admin.post(f"{url}/xapi/commands", json=TRY).raise_for_status()
    [command] = [c for c in admin.get(f"{url}/xapi/commands").json() if c["name"] == TRY["name"]]
    wrapper = command["xnat"][0]["id"]
    admin.put(f"{url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
    admin.put(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/enabled").raise_for_status()
    launched = admin.post(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/root/project/launch",
                          json={"project": f"/data/projects/{project}", "PROJECT": project})
    assert launched.status_code == 200, launched.text
    job = wait_final(xnat_server, launched.json()["id"], timeout=60)
    out = admin.get(f"{url}/xapi/containers/{job['id']}/logs/stdout").text
    assert job["status"] == "Complete", (job, out)
    assert dict(re.findall(r"^(host|users|own) (\S+)$", out, re.M)) == {
        "host": url, "users": "403", "own": "201"
    }, out
    assert admin.get(f"{url}/xapi/users/made_in_job").status_code == 404
    assert admin.get(f"{url}/data/projects/{project}/subjects/in_job").status_code == 200
