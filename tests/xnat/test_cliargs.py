"""The server options every XNAT verb shares, and `xnat-ml` start-up staying cheap."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args, login_from_args

HEAVY = ("scipy", "xnat", "flask", "sqlalchemy", "pydicom", "numpy", "torch", "requests",
         "pandas", "nibabel", "highdicom", "waitress")  # fmt: skip


def test_building_the_parser_imports_no_heavy_package():
    probe = (
        "import json, sys, xnat_ml.cli; xnat_ml.cli.build_parser(); "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    return parser.parse_args(argv)


def test_host_is_an_alias_of_url():
    assert _parse(["--host", "http://a:1"]).url == "http://a:1"
    assert _parse(["--url", "http://b:2", "--user", "u", "--password", ""]).password == ""


def test_options_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("XNAT_HOST", "http://env:1/")
    monkeypatch.setenv("XNAT_USER", "envuser")
    monkeypatch.setenv("XNAT_PASS", "envpass")
    assert login_from_args(_parse([])) == ("http://env:1", "envuser", "envpass")
    given = _parse(["--url", "http://arg:2", "--user", "me", "--password", "pw"])
    assert login_from_args(given) == ("http://arg:2", "me", "pw")


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        ([], "no address given"),
        (["--url", "ftp://x"], "must start with http"),
        (["--url", "http://x"], "no user given"),
        (["--url", "http://x", "--user", "me"], "no password given"),
    ],
)
def test_missing_or_bad_login_is_refused_in_one_sentence(monkeypatch, argv, problem):
    for name in ("XNAT_HOST", "XNAT_USER", "XNAT_PASS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(XnatMlError, match=problem):
        login_from_args(_parse(argv))


def test_connect_from_args_opens_a_session(xnat_server):
    args = _parse(["--url", xnat_server.url, "--user", xnat_server.user,
                   "--password", xnat_server.password])  # fmt: skip
    with connect_from_args(args) as session:
        assert session.get_json("/data/projects")["ResultSet"] is not None


def test_connect_from_args_reports_a_wrong_password(xnat_server):
    args = _parse(["--url", xnat_server.url, "--user", xnat_server.user, "--password", "nope"])
    with pytest.raises(XnatMlError, match="login failed"):
        connect_from_args(args)
