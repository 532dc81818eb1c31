"""`GET .../wrappers/{id}/launch`: the launch UI XNAT's launcher and the dashboard build forms
from (XNAT's LaunchUi JSON), with the project role checked."""

from __future__ import annotations

import json

import pytest

from xnat_ml.assets import shipped_dir


@pytest.fixture(scope="module")
def evaluate_wrapper(xnat_server) -> tuple[int, int]:
    """(command id, wrapper id) of the shipped evaluate command, installed once."""
    http, url = xnat_server.session(), xnat_server.url
    doc = json.loads((shipped_dir("command_json") / "evaluate.json").read_text())
    if doc["name"] not in [c["name"] for c in http.get(f"{url}/xapi/commands").json()]:
        http.post(f"{url}/xapi/commands", json=doc).raise_for_status()
    [command] = [c for c in http.get(f"{url}/xapi/commands").json() if c["name"] == doc["name"]]
    return int(command["id"]), int(command["xnat"][0]["id"])


def _by_name(trees: list[dict]) -> dict[str, dict]:
    return {t["name"]: t for t in trees}


def test_project_launch_ui_has_xnats_shape_and_resolves_the_project(
    xnat_server, project, evaluate_wrapper
):
    command_id, wrapper_id = evaluate_wrapper
    http, url = xnat_server.session(), xnat_server.url
    answer = http.get(f"{url}/xapi/projects/{project}/wrappers/{wrapper_id}/launch",
                      params={"project": project})  # fmt: skip
    assert answer.status_code == 200, answer.text
    ui = answer.json()
    assert set(ui) == {"meta", "container-server-config", "input-config", "input-values"}
    assert ui["meta"]["command-id"] == command_id and ui["meta"]["wrapper-id"] == wrapper_id
    assert ui["meta"]["command-name"] == "evaluate"
    configs = _by_name(ui["input-config"])
    # the root, with the project id derived from it as its child; PROJECT_ID (provided) is no root
    assert configs["project"]["input-type"] == "static"
    [child] = configs["project"]["children"]
    assert child["name"] == "project-id" and child["user-settable"] is False
    assert "PROJECT_ID" not in configs
    assert configs["SPLIT"]["input-type"] == "select-one"
    assert "testing" in configs["SPLIT"]["select-values"]
    assert configs["MODEL"]["input-type"] == "text" and configs["MODEL"]["required"] is True
    values = _by_name(ui["input-values"])
    [root] = values["project"]["values"]
    assert root["value"] == f"/projects/{project}"
    assert root["children"][0]["values"][0]["value"] == project
    # the command-id form answers the same
    same = http.get(f"{url}/xapi/projects/{project}/commands/{command_id}/wrappers/"
                    "evaluate-project/launch", params={"project": project})  # fmt: skip
    assert same.json() == ui
    # site forms: no object given, so no children and no values for the root
    site = http.get(f"{url}/xapi/wrappers/{wrapper_id}/launch").json()
    assert _by_name(site["input-config"])["project"]["children"] == []
    assert _by_name(site["input-values"])["project"]["values"] == []
    assert http.get(f"{url}/xapi/commands/{command_id}/wrappers/evaluate-project/launch").ok


def test_launch_ui_refuses_outsiders_bad_objects_and_unknown_inputs(
    xnat_server, project, evaluate_wrapper
):
    _, wrapper_id = evaluate_wrapper
    url = xnat_server.url
    xnat_server.add_user("launchui_outsider", "launchui-pw-1")
    xnat_server.add_user("launchui_collab", "launchui-pw-2", project, "Collaborator")
    form = f"{url}/xapi/projects/{project}/wrappers/{wrapper_id}/launch"
    outsider = xnat_server.session("launchui_outsider", "launchui-pw-1")
    assert outsider.get(form).status_code in (403, 404)
    assert xnat_server.session("launchui_collab", "launchui-pw-2").get(form).status_code == 200
    http = xnat_server.session()
    assert http.get(f"{url}/xapi/projects/{project}/wrappers/999999/launch").status_code == 404
    unknown = http.get(form, params={"nonsense": "1"})
    assert unknown.status_code == 400 and "nonsense" in unknown.text
    elsewhere = http.get(form, params={"project": "SOMEWHERE_ELSE"})
    assert elsewhere.status_code == 400 and "project" in elsewhere.text
    hostile = http.get(form, params={"project": "../../etc/passwd"})
    assert hostile.status_code == 400
    # an outsider cannot learn of another project's objects through a site form either
    site = outsider.get(f"{url}/xapi/wrappers/{wrapper_id}/launch", params={"project": project})
    assert site.status_code == 400 and "no such object you may read" in site.text
