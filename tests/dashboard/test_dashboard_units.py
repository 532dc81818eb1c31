"""The dashboard's parsers of outside data, without a server: launch-UI JSON (from whatever
XNAT answers), the reverse proxy's X-Forwarded-Prefix, and the login redirect target."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from xnat_ml.containers.installed import InstalledWrapper
from xnat_ml.dashboard import launch_forms
from xnat_ml.dashboard.app import ForwardedPrefix, create_app
from xnat_ml.errors import XnatMlError

WRAPPER = InstalledWrapper(1, "train", 7, "train-project", ("xnat:projectData",), "project",
                           "Project")  # fmt: skip


class FakeXnat:
    """Answers the launch-UI request with `ui`; records launches."""

    def __init__(self, ui, launch_answer=None) -> None:
        self.ui, self.launch_answer, self.posted = ui, launch_answer, []

    def get_json(self, path, query=None):
        if path == "/xapi/commands":
            return [{"id": 1, "name": "train", "xnat": [{
                "id": 7, "name": "train-project", "contexts": ["xnat:projectData"],
                "external-inputs": [{"name": "project", "type": "Project"}]}]}]  # fmt: skip
        return self.ui

    def post(self, path, json=None, accepted_status=None):
        self.posted.append((path, json))
        status, body = self.launch_answer
        return SimpleNamespace(status_code=status, json=lambda: body, text=str(body))


UI = {
    "meta": {"wrapper-description": "Train"},
    "input-config": [
        {"name": "project", "input-type": "static", "children": [
            {"name": "project-id", "input-type": "static", "user-settable": False,
             "children": []}]},
        {"name": "CONFIG", "label": "Training config", "input-type": "text", "required": True,
         "children": []},
        {"name": "SPLIT", "input-type": "select-one", "select-values": ["training", "testing"],
         "children": []},
        {"name": "SECRET", "input-type": "password", "children": []},
        {"name": "ODD", "input-type": "<script>", "children": []},
    ],
    "input-values": [
        {"name": "project", "values": [{"value": "/projects/P", "children": [
            {"name": "project-id", "values": [{"value": "P", "children": []}]}]}]},
        {"name": "SPLIT", "values": [{"value": "testing", "children": []}]},
    ],
}  # fmt: skip


def test_a_form_holds_the_settable_inputs_and_shows_the_derived_ones():
    form = launch_forms.launch_form(FakeXnat(UI), "P", "train", None)
    assert [f.name for f in form.fields] == ["CONFIG", "SPLIT", "SECRET"]  # no unknown types
    split = form.fields[1]
    assert split.options == ["training", "testing"] and split.value == "testing"
    assert form.fixed == [("project-id", "P")] and form.root_value == "P"


@pytest.mark.parametrize("ui", [
    {}, {"input-config": None}, {"input-config": [], "meta": None}, {"input-config": "x"},
    {"input-config": [1, None, {"children": 5}, {"name": ["x"], "input-type": "text"}]},
    {"input-values": [{"name": "CONFIG", "values": [None, {"children": "x"}]}]},
])  # fmt: skip
def test_an_empty_or_odd_launch_ui_gives_an_empty_form(ui):
    assert launch_forms.launch_form(FakeXnat(ui), "P", "train", None).fields == []


def test_a_launch_ui_that_is_no_object_or_nested_too_deep_is_refused_or_cut():
    with pytest.raises(XnatMlError, match="not a JSON object"):
        launch_forms.launch_form(FakeXnat(["a list"]), "P", "train", None)
    deep = {"name": "CONFIG", "input-type": "text", "children": []}
    for _ in range(100):
        deep = {"name": "x", "input-type": "static", "children": [deep]}
    assert launch_forms.launch_form(FakeXnat({"input-config": [deep]}), "P", "train",
                                    None).fields == []  # fmt: skip


def test_a_launch_sends_the_values_and_reports_a_refusal_in_one_line():
    xnat = FakeXnat(UI, (200, {"status": "success", "id": 42}))
    form = launch_forms.launch_form(xnat, "P", "train", None)
    assert launch_forms.submit(xnat, "P", form, {"CONFIG": " tiny ", "SPLIT": "training"}) == 42
    assert xnat.posted[-1] == ("/xapi/projects/P/wrappers/7/root/project/launch",
                               {"project": "P", "CONFIG": "tiny", "SPLIT": "training"})
    with pytest.raises(XnatMlError, match="Training config is required"):
        launch_forms.submit(xnat, "P", form, {})
    xnat.launch_answer = (403, "<html>Forbidden\nmore</html>")
    with pytest.raises(XnatMlError, match=r"refused the launch \(HTTP 403"):
        launch_forms.submit(xnat, "P", form, {"CONFIG": "tiny"})


def _served(prefix: str | None, path: str) -> str:
    """The SCRIPT_NAME the app sees behind ForwardedPrefix."""
    seen = {}

    def app(environ, start_response):
        seen["script"] = environ.get("SCRIPT_NAME", "")
        return Response("ok")(environ, start_response)

    headers = {"X-Forwarded-Prefix": prefix} if prefix is not None else {}
    Client(ForwardedPrefix(app)).get(path, headers=headers)
    return seen["script"]


@pytest.mark.parametrize("prefix, path, expected", [
    ("/xnat", "/ml/", "/xnat"),
    ("/xnat/", "/ml/p/P/", "/xnat"),
    ("/xnat", "/data/projects", ""),  # XNAT's own paths are left alone
    ("//evil.example", "/ml/", ""),  # would make links to another site
    ("/x?y", "/ml/", ""),
    ("http://evil.example", "/ml/", ""),
    ("/a/../b", "/ml/", "/a/../b"),  # only a path segment shape; the proxy chose it
    (None, "/ml/", ""),
])  # fmt: skip
def test_only_a_plain_path_prefix_is_taken_and_only_for_the_dashboard(prefix, path, expected):
    assert _served(prefix, path) == expected


@pytest.mark.parametrize("target", ["//evil.example/ml/", "https://evil.example/", "/data/x",
                                    "/ml//evil.example"])  # fmt: skip
def test_the_login_form_never_redirects_off_the_dashboard(target, monkeypatch):
    from xnat_ml.dashboard import login

    monkeypatch.setattr(login, "log_in", lambda user, password: None)
    app = create_app("http://127.0.0.1:1")
    client = app.test_client()
    with client.session_transaction() as session:
        session["csrf"] = "t"
    answer = client.post(f"/ml/login?next={target}",
                         data={"username": "u", "password": "p", "csrf_token": "t"})  # fmt: skip
    assert answer.status_code == 302 and answer.headers["Location"] == "/ml/"


def test_a_post_without_the_session_token_is_refused():
    app = create_app("http://127.0.0.1:1")
    client = app.test_client()
    assert client.post("/ml/login", data={"username": "u", "password": "p"}).status_code == 400
    with client.session_transaction() as session:
        session.update(alias="a", secret="s", user="u", csrf="right")
    assert client.post("/ml/p/P/datasets", data={"csrf_token": "wrong"}).status_code == 400
