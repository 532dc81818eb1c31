"""`xnat-ml commands install`: a site admin installs the shipped commands on a fresh server and
enables their wrappers (site-wide, in a project), GPU requests dropped on demand; a second run
changes nothing; a project Owner who is no site admin is refused in one line, nothing
installed; bad arguments are refused before any call."""

from __future__ import annotations

import pytest

from xnat_ml.cli import main

PROJECT = "SETUP"


@pytest.fixture(scope="module")
def site(start_xnat_server):
    """A fresh server (no command installed) with project SETUP and its Owner setup_owner."""
    server = start_xnat_server("commands-install")
    server.session().put(f"{server.url}/data/projects/{PROJECT}").raise_for_status()
    server.add_user("setup_owner", "setup-owner-pw", PROJECT, "Owner")
    return server


def _install(site, *args: str, user: str = "admin", password: str | None = None) -> int:
    login = ["--url", site.url, "--user", user, "--password", password or site.password]
    return main(["commands", "install", *args, *login])


def _commands(site) -> dict[str, dict]:
    return {c["name"]: c for c in site.session().get(f"{site.url}/xapi/commands").json()}


def _enabled(site, wrapper_id: int, scope: str = "") -> bool:
    return site.session().get(f"{site.url}/xapi{scope}/wrappers/{wrapper_id}/enabled").json()


def test_an_owner_who_is_no_site_admin_is_refused(site, capsys):
    assert _install(site, "train", user="setup_owner", password="setup-owner-pw") == 1
    err = capsys.readouterr().err.strip()
    assert err == ("xnat-ml: error: user setup_owner: commands install needs a site "
                   "administrator (XNAT's Administrator role)"), err  # fmt: skip
    assert _commands(site) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "command nope: not shipped (shipped: build-dataset, "),
        (["--project", PROJECT, "train"], "--project: only with --enable"),
        (["--enable", "--project", "NOSUCH", "train"], "project NOSUCH: the server answered HTTP"),
    ],
)
def test_bad_arguments_install_nothing(site, capsys, args, message):
    assert _install(site, *args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert "train" not in _commands(site)


def test_admin_installs_and_enables_idempotently(site, capsys):
    assert _install(site, "--enable", "--project", PROJECT, "--cpu-only", "train", "finetune") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("command train 0.1.0: installed (id "), out
    assert out[0].endswith(f"enabled train-project site-wide and in project {PROJECT}"), out
    commands = _commands(site)
    assert set(commands) == {"train", "finetune"}
    for command in commands.values():  # --cpu-only: no GPU request left
        gpu_keys = [k for k in command.get("generic-resources") or {} if "gpu" in k.lower()]
        assert "gpus" not in command and not gpu_keys and "runtime" not in command, command
        assert "NVIDIA_VISIBLE_DEVICES" not in (command.get("environment-variables") or {})
        for wrapper in command["xnat"]:
            assert _enabled(site, wrapper["id"]) and _enabled(site, wrapper["id"],
                                                              f"/projects/{PROJECT}")  # fmt: skip

    assert _install(site, "--enable", "--project", PROJECT, "--cpu-only", "train") == 0
    again = capsys.readouterr().out.strip()
    assert again.startswith("command train 0.1.0: already installed (id "), again
    assert _commands(site).keys() == {"train", "finetune"}
    # asked with GPUs this time: said, not changed
    assert _install(site, "train") == 0
    assert "its GPU request differs from this one" in capsys.readouterr().out

    assert _install(site, "infer") == 0  # no --enable: installed, left disabled
    infer = _commands(site)["infer"]
    assert infer.get("gpus") is None or infer["gpus"] == "0"
    assert not any(_enabled(site, w["id"]) for w in infer["xnat"])
