"""`xnat-ml events install`: broken handler files, missing commands, a disabled Event Service."""

from __future__ import annotations

import json

import pytest

from xnat_ml.cli import main
from xnat_ml.errors import XnatMlError
from xnat_ml.events.install import HANDLER_DIR, default_handlers, install_handler, read_handler
from xnat_ml.xnat import connect

SHIPPED = json.loads((HANDLER_DIR / "roi-to-mask.subscription.json").read_text())


def write(tmp_path, content) -> str:
    path = tmp_path / "handler.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[" * 100_000, "JSON nested too deeply"),
        ("[]", "no 'x-xnat-ml' block"),
        ({k: v for k, v in SHIPPED.items() if k != "x-xnat-ml"}, "no 'x-xnat-ml' block"),
        (dict(SHIPPED, **{"x-xnat-ml": {"wrapper": "w"}}), "'x-xnat-ml.command' is missing"),
        (dict(SHIPPED, **{"event-filter": {"event-type": "ScanEvent", "status": "UPDATED"}}),
         "'event-filter.status'"),
        (dict(SHIPPED, bogus=1), "subscription field 'bogus'"),
    ],
)
def test_broken_handler_files(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(XnatMlError, match=message) as caught:
        read_handler(path)
    assert str(path) in str(caught.value)


def test_shipped_handler_reads():
    handler = read_handler(HANDLER_DIR / "roi-to-mask.subscription.json")
    assert handler.command == "roi-to-mask"
    assert handler.wrapper == "roi-to-mask-roi-collection"
    assert "x-xnat-ml" not in handler.document


def test_missing_command_is_one_line(xnat_server, project, cli, tmp_path):
    path = write(tmp_path, dict(SHIPPED, **{"x-xnat-ml": {"command": "no-such-command"}}))
    result = cli("events", "install", "--project", project, "--file", str(path))
    assert result.returncode == 1
    assert "command no-such-command: not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_disabled_event_service_is_reported(xnat_server, project, cli):
    prefs = f"{xnat_server.url}/xapi/events/prefs"
    admin = xnat_server.session()
    admin.put(prefs, json={"enabled": False}).raise_for_status()
    try:
        result = cli("events", "install", "--project", project)
    finally:
        admin.put(prefs, json={"enabled": True}).raise_for_status()
    assert result.returncode == 1
    assert "Event Service: switched off" in result.stderr


def test_project_owner_installs_without_admin_rights(xnat_server, project, capsys):
    url, admin = xnat_server.url, xnat_server.session()
    command = json.loads((HANDLER_DIR.parent / "command_json/roi-to-mask.json").read_text())
    if command["name"] not in [c["name"] for c in admin.get(f"{url}/xapi/commands").json()]:
        admin.post(f"{url}/xapi/commands", json=command).raise_for_status()
    xnat_server.add_user("inst_owner", "pw-owner", project, "Owner")
    xnat_server.add_user("inst_member", "pw-member", project, "Member")

    member = main(["events", "install", "--project", project, "--url", url,
                   "--user", "inst_member", "--password", "pw-member"])  # fmt: skip
    assert member == 1
    assert "events install needs the Owner role (you are Member)" in capsys.readouterr().err

    owner = main(["events", "install", "--project", project, "--url", url,
                  "--user", "inst_owner", "--password", "pw-owner"])  # fmt: skip
    assert owner == 0
    assert "created in project" in capsys.readouterr().out
    subs = admin.get(f"{url}/xapi/projects/{project}/events/subscriptions").json()
    [sub] = [s for s in subs if s["name"].startswith(f"{project}: ")]
    assert sub["subscription-owner"] == "inst_owner"
    assert sub["event-filter"]["project-ids"] == [project]


def test_plain_install_takes_no_opt_in_handler():
    assert [h.name for h in default_handlers()] == ["roi-to-mask"]
    infer = read_handler(HANDLER_DIR / "infer.subscription.json")
    assert infer.opt_in and infer.settings == {"MODEL": "model"}
    assert infer.wrapper == "infer-dicom-resource"


def test_an_opt_in_handler_without_its_setting_is_not_installed(xnat_server, project):
    """Through the API too (as demo and the fixtures call it): no subscription with no MODEL."""
    infer = read_handler(HANDLER_DIR / "infer.subscription.json")
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        with pytest.raises(XnatMlError, match=r"event handler infer: needs --set MODEL=\.\.\."):
            install_handler(session, project, infer)
