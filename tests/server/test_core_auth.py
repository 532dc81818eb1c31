"""Login, sessions, alias tokens and project roles of the embedded server, over real HTTP."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import requests
from werkzeug.routing import AnyConverter, IntegerConverter

from xnat_ml.server.app import create_app
from xnat_ml.server.auth import PUBLIC_ENDPOINTS


def test_root_version_and_build_info_answer(xnat_server):
    assert requests.get(xnat_server.url).status_code == 200
    assert requests.get(f"{xnat_server.url}/data/version").status_code == 404  # XNAT >= 1.7
    info = requests.get(f"{xnat_server.url}/xapi/siteConfig/buildInfo").json()
    assert info["version"].startswith("1.8")


def test_services_auth_gives_a_working_jsessionid_until_deleted(xnat_server):
    http = requests.Session()
    reply = http.put(
        f"{xnat_server.url}/data/services/auth",
        data={"username": xnat_server.user, "password": xnat_server.password},
    )
    assert reply.status_code == 200
    session_id = reply.text
    assert http.cookies["JSESSIONID"] == session_id
    assert (
        http.get(f"{xnat_server.url}/data/auth").text == f"User '{xnat_server.user}' is logged in"
    )
    assert http.get(f"{xnat_server.url}/data/JSESSION").text == session_id
    assert http.get(f"{xnat_server.url}/data/projects?format=json").status_code == 200

    assert http.delete(f"{xnat_server.url}/data/JSESSION").status_code == 200
    stale = requests.get(f"{xnat_server.url}/data/projects", cookies={"JSESSIONID": session_id})
    assert stale.status_code == 401


@pytest.mark.parametrize("password", ["wrong", "ADMIN"])
def test_wrong_password_is_401_everywhere(xnat_server, password):
    bad = (xnat_server.user, password)
    for method, path in [
        ("GET", "/data/projects"),
        ("GET", "/data/auth"),
        ("PUT", "/data/projects/NOPE"),
        ("GET", "/xapi/users"),
    ]:
        reply = requests.request(method, f"{xnat_server.url}{path}", auth=bad)
        assert reply.status_code == 401, (method, path)
        assert "Traceback" not in reply.text
    login = requests.put(
        f"{xnat_server.url}/data/services/auth",
        data={"username": xnat_server.user, "password": password},
    )
    assert login.status_code == 401
    assert "Login attempt failed" in login.text


def test_missing_credentials_are_401_with_a_basic_challenge(xnat_server):
    reply = requests.get(f"{xnat_server.url}/data/projects?format=json")
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Basic")
    assert (
        requests.get(
            f"{xnat_server.url}/data/projects", cookies={"JSESSIONID": "FORGED"}
        ).status_code
        == 401
    )


def test_alias_token_authenticates_and_validates(xnat_server):
    admin = xnat_server.session()
    token = admin.get(f"{xnat_server.url}/data/services/tokens/issue").json()
    assert uuid.UUID(token["alias"])  # xnatpy recognises token logins by this shape
    assert token["xdatUserId"] == xnat_server.user
    assert token["estimatedExpirationTime"] > time.time() * 1000

    as_token = requests.Session()
    as_token.auth = (token["alias"], token["secret"])
    assert (
        as_token.get(f"{xnat_server.url}/data/auth").text
        == f"User '{xnat_server.user}' is logged in"
    )
    root = as_token.get(xnat_server.url)
    assert root.cookies.get("JSESSIONID")  # xnatpy's token login reads this cookie

    valid = admin.get(
        f"{xnat_server.url}/data/services/tokens/validate/{token['alias']}/{token['secret']}"
    ).json()
    assert valid == {"valid": xnat_server.user}
    invalid = admin.get(
        f"{xnat_server.url}/data/services/tokens/validate/{token['alias']}/not-the-secret"
    ).json()
    assert invalid == {"valid": None}
    wrong_secret = requests.get(f"{xnat_server.url}/data/auth", auth=(token["alias"], "nope"))
    assert wrong_secret.status_code == 401


def test_tokens_for_other_users_need_a_site_admin(xnat_server, project):
    xnat_server.add_user("tok_member", "pw-member", project, "Member")
    member = xnat_server.session("tok_member", "pw-member")
    mine = member.get(f"{xnat_server.url}/data/services/tokens/issue")
    assert mine.json()["xdatUserId"] == "tok_member"
    assert member.get(f"{xnat_server.url}/data/services/tokens/issue/user/admin").status_code == 403
    issued = xnat_server.session().get(
        f"{xnat_server.url}/data/services/tokens/issue/user/tok_member"
    )
    assert issued.json()["xdatUserId"] == "tok_member"
    assert (
        xnat_server.session()
        .get(f"{xnat_server.url}/data/services/tokens/issue/user/nobody")
        .status_code
        == 404
    )


def test_alias_tokens_expire(tmp_path):
    app = create_app(tmp_path, token_lifetime_s=1)
    client = app.test_client()
    basic = {"Authorization": "Basic YWRtaW46YWRtaW4="}  # admin:admin
    token = client.get("/data/services/tokens/issue", headers=basic).get_json()
    as_token = requests.auth._basic_auth_str(token["alias"], token["secret"])
    assert client.get("/data/auth", headers={"Authorization": as_token}).status_code == 200
    time.sleep(1.2)
    assert client.get("/data/auth", headers={"Authorization": as_token}).status_code == 401


def test_token_secrets_and_passwords_are_stored_hashed(tmp_path):
    app = create_app(tmp_path, admin_password="s3cret-pw")
    client = app.test_client()
    basic = requests.auth._basic_auth_str("admin", "s3cret-pw")
    token = client.get("/data/services/tokens/issue", headers={"Authorization": basic}).get_json()
    stored = (tmp_path / "xnat-ml.sqlite").read_bytes()
    assert token["secret"].encode() not in stored
    assert b"s3cret-pw" not in stored


def test_users_are_created_by_admins_only(xnat_server, project):
    xnat_server.add_user("plain_user", "pw-plain")
    plain = xnat_server.session("plain_user", "pw-plain")
    reply = plain.post(
        f"{xnat_server.url}/xapi/users", json={"username": "sneaky", "password": "x"}
    )
    assert reply.status_code == 403
    admin = xnat_server.session()
    assert "plain_user" in admin.get(f"{xnat_server.url}/xapi/users").json()
    dup = admin.post(
        f"{xnat_server.url}/xapi/users", json={"username": "plain_user", "password": "x"}
    )
    assert dup.status_code == 409
    bad = admin.post(f"{xnat_server.url}/xapi/users", json={"username": "../etc", "password": "x"})
    assert bad.status_code == 400


@pytest.fixture
def roles(xnat_server, project):
    """Users with each role in `project`, plus an outsider; returns name → requests session."""
    names = {}
    for role in ("Owner", "Member", "Collaborator", None):
        name = f"r_{(role or 'none').lower()}_{uuid.uuid4().hex[:6]}"
        xnat_server.add_user(name, "pw-" + name, project, role)
        names[role] = xnat_server.session(name, "pw-" + name)
        names[role].username = name
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{project}/subjects/SUBJ1").raise_for_status()
    http.put(
        f"{xnat_server.url}/data/projects/{project}/subjects/SUBJ1/experiments/SESS1",
        params={"xsiType": "xnat:mrSessionData"},
    ).raise_for_status()
    return names


def _status(http, method, url, **kw):
    return http.request(method, url, **kw).status_code


def test_collaborator_reads_but_cannot_write(xnat_server, project, roles):
    base = f"{xnat_server.url}/data/projects/{project}"
    collaborator = roles["Collaborator"]
    assert _status(collaborator, "GET", f"{base}/subjects?format=json") == 200
    assert _status(collaborator, "GET", f"{base}/experiments/SESS1?format=json") == 200
    assert _status(collaborator, "PUT", f"{base}/subjects/NEW") == 403
    assert _status(collaborator, "DELETE", f"{base}/subjects/SUBJ1") == 403
    assert _status(collaborator, "PUT", f"{base}/users/Members/{collaborator.username}") == 403


def test_member_edits_data_but_deletes_nothing_nor_manages_membership(xnat_server, project, roles):
    base = f"{xnat_server.url}/data/projects/{project}"
    member = roles["Member"]
    assert _status(member, "PUT", f"{base}/subjects/BY_MEMBER") == 201
    assert (
        _status(
            member,
            "PUT",
            f"{base}/subjects/BY_MEMBER/experiments/MS1",
            params={"xsiType": "xnat:ctSessionData"},
        )
        == 201
    )
    assert _status(member, "DELETE", f"{base}/subjects/BY_MEMBER") == 403  # as in XNAT
    assert _status(roles["Owner"], "DELETE", f"{base}/subjects/BY_MEMBER") == 200
    assert _status(member, "PUT", f"{base}/users/Owners/{member.username}") == 403
    assert _status(member, "DELETE", base) == 403


def test_outsider_is_refused_and_sees_nothing(xnat_server, project, roles):
    base = f"{xnat_server.url}/data/projects/{project}"
    outsider = roles[None]
    for method, url in [
        ("GET", base),
        ("GET", f"{base}/subjects"),
        ("GET", f"{base}/experiments/SESS1"),
        ("PUT", f"{base}/subjects/X"),
        ("DELETE", base),
        ("GET", f"{xnat_server.url}/data/experiments?project={project}"),
        ("GET", f"{base}/users"),
    ]:
        assert _status(outsider, method, url) == 403, (method, url)
    listed = outsider.get(f"{xnat_server.url}/data/projects?format=json").json()
    assert project not in [row["ID"] for row in listed["ResultSet"]["Result"]]
    every = outsider.get(f"{xnat_server.url}/data/experiments?format=json").json()
    assert every["ResultSet"]["Result"] == []


def test_owner_manages_membership(xnat_server, project, roles):
    base = f"{xnat_server.url}/data/projects/{project}"
    owner, outsider = roles["Owner"], roles[None]
    assert _status(owner, "PUT", f"{base}/users/Collaborators/{outsider.username}") == 200
    assert _status(outsider, "GET", f"{base}/subjects") == 200
    rows = owner.get(f"{base}/users?format=json").json()["ResultSet"]["Result"]
    assert {"login": outsider.username, "displayname": "Collaborators"}.items() <= next(
        r for r in rows if r["login"] == outsider.username
    ).items()
    assert _status(owner, "DELETE", f"{base}/users/Collaborators/{outsider.username}") == 200
    assert _status(outsider, "GET", f"{base}/subjects") == 403
    assert _status(owner, "PUT", f"{base}/users/Kings/{outsider.username}") == 400
    assert _status(owner, "PUT", f"{base}/users/Members/no_such_user") == 404


def test_missing_objects_are_404_for_everyone_allowed(xnat_server, project, roles):
    base = f"{xnat_server.url}/data/projects/{project}"
    for http in (xnat_server.session(), roles["Collaborator"]):
        for url in [
            f"{xnat_server.url}/data/projects/NO_SUCH_PROJECT",
            f"{base}/subjects/NOBODY",
            f"{base}/experiments/NOTHING",
            f"{base}/experiments/SESS1/scans/99",
            f"{xnat_server.url}/data/experiments/XNAT_E99999",
            f"{xnat_server.url}/data/subjects/XNAT_S99999",
        ]:
            reply = http.get(url)
            assert reply.status_code == 404, url
            assert re.match(r"^404 Not Found: .+\n$", reply.text)


def test_project_creator_becomes_owner(xnat_server):
    name = f"creator_{uuid.uuid4().hex[:6]}"
    xnat_server.add_user(name, "pw")
    creator = xnat_server.session(name, "pw")
    project_id = f"BY_{name}"
    assert _status(creator, "PUT", f"{xnat_server.url}/data/projects/{project_id}") == 201
    rows = creator.get(f"{xnat_server.url}/data/projects/{project_id}/users?format=json").json()
    assert rows["ResultSet"]["Result"][0]["role"] == "Owner"
    assert _status(creator, "DELETE", f"{xnat_server.url}/data/projects/{project_id}") == 200


def test_unexpected_failures_are_one_line_500s_and_the_app_keeps_serving(tmp_path):
    app = create_app(tmp_path)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    client = app.test_client()
    reply = client.get("/boom", auth=("admin", "admin"))
    assert reply.status_code == 500
    text = reply.get_data(as_text=True)
    assert text == "500 Internal Server Error: RuntimeError while handling /boom\n"
    assert client.get("/xapi/siteConfig/buildInfo").status_code == 200


def test_sessions_expire_when_idle_not_while_used(tmp_path):
    app = create_app(tmp_path, session_lifetime_s=2)
    client = app.test_client()
    login = client.put("/data/services/auth", data={"username": "admin", "password": "admin"})
    assert login.status_code == 200
    for _ in range(3):  # 3.6 s of use outlive the 2 s lifetime
        time.sleep(1.2)
        assert client.get("/data/auth").status_code == 200
    time.sleep(2.2)
    assert client.get("/data/auth").status_code == 401


def test_a_writing_request_on_a_half_spent_session_slides_it_without_a_lock_wait(tmp_path):
    """The slide is written in its own transaction; a POST's own one held the write lock, so
    the slide waited the whole busy timeout and the request failed: "database is locked"."""
    app = create_app(tmp_path, session_lifetime_s=2)
    client = app.test_client()
    login = client.put("/data/services/auth", data={"username": "admin", "password": "admin"})
    assert login.status_code == 200
    time.sleep(1.2)
    start = time.monotonic()
    assert client.post("/xapi/commands", data=b"{not json").status_code == 400
    assert time.monotonic() - start < 5
    time.sleep(1.2)  # past the first lifetime: only the slide keeps the session alive
    assert client.get("/data/auth").status_code == 200



def _sample_url(adapter, rule) -> str:
    """A URL of the rule, its variables filled with values of the right shape."""
    values = {}
    for name, converter in rule._converters.items():
        if isinstance(converter, AnyConverter):
            values[name] = sorted(converter.items)[0]
        elif isinstance(converter, IntegerConverter):
            values[name] = 1
        elif type(converter).__name__ == "ObjectPathConverter":
            values[name] = "projects/P1/subjects/S1"
        else:
            values[name] = "x1"
    return adapter.build(rule.endpoint, values, method=sorted(rule.methods)[0])


def test_every_route_but_the_public_ones_asks_anonymous_callers_to_log_in(xnat_server, tmp_path):
    """Walks the server's own URL map, so a route added later is covered with no test edit: an
    anonymous request gets 401 before any validation could say what exists."""
    app = create_app(tmp_path / "routes")
    adapter = app.url_map.bind("localhost")
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = _sample_url(adapter, rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            answer = requests.request(method, f"{xnat_server.url}{url}", data=b"x", timeout=30,
                                      allow_redirects=False)  # fmt: skip
            if rule.endpoint in ("dashboard.login_form", "dashboard.static"):
                continue  # the dashboard's login form and its CSS: its own login, below
            if rule.endpoint.startswith("dashboard."):  # a form login: sent to the form
                assert answer.status_code == 302, (method, rule.rule, answer.status_code)
                assert "/ml/login" in answer.headers["Location"], rule.rule
                continue
            assert answer.status_code == 401, (method, rule.rule, answer.status_code, answer.text)
            checked += 1
    assert checked > 100
    for public in ("/", "/xapi/siteConfig/buildInfo"):
        assert requests.get(f"{xnat_server.url}{public}", timeout=30).status_code == 200


def _record_hooks(app) -> list[str]:
    """Wrap every before-request and URL-value hook of the app so that each call is recorded."""
    calls: list[str] = []

    def recorded(hook):
        def wrapper(*args, **kwargs):
            calls.append(hook.__name__)
            return hook(*args, **kwargs)

        return wrapper

    for table in (app.before_request_funcs, app.url_value_preprocessors):
        for scope, hooks in table.items():
            table[scope] = [recorded(hook) for hook in hooks]
    return calls


def test_authentication_is_the_first_hook_on_every_route(tmp_path):
    """A blueprint's before_app_request hook (the Container Service resuming jobs) registered
    ahead of authentication ran for anonymous callers; now nothing but the login check does."""
    app = create_app(tmp_path)
    calls = _record_hooks(app)
    client = app.test_client()
    adapter = app.url_map.bind("localhost")
    blueprints = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard logs in with a form (its redirect is checked above)
        url = _sample_url(adapter, rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            calls.clear()
            assert client.open(url, method=method, data=b"x").status_code == 401, (method, url)
            assert calls == ["login_unless_public"], (method, url, calls)
            blueprints.add(rule.endpoint.partition(".")[0])
    assert {"archive", "resources", "roi", "events", "commands", "containers"} <= blueprints
    calls.clear()  # with credentials the other hooks do run: the recording sees them
    assert client.get("/data/projects", auth=("admin", "admin")).status_code == 200
    assert calls[0] == "login_unless_public" and "_announce_ready" in calls
