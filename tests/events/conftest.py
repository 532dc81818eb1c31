"""Fixtures of the Event Service and batch tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xnat_ml.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(xnat_server, capsys):
    """Run `xnat-ml ARGS --url ... --user ... --password ...` in this process (real HTTP)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([*args, "--url", xnat_server.url, "--user", xnat_server.user,
                     "--password", xnat_server.password])  # fmt: skip
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run
