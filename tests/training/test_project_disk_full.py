"""A server without room for a run: its first upload is a 507, the run is refused before any
training with one line, and nothing is left in ML_RUNS (the server's data folder sits on a small
tmpfs filled to the brim once the project is set up)."""

from __future__ import annotations

import os
import subprocess

import pytest
from servers import XnatServer
from xnat_project import set_up

from xnat_ml.errors import XnatMlError
from xnat_ml.training.project_files import list_paths
from xnat_ml.training.project_train import TrainRequest, train_in_project
from xnat_ml.xnat import connect

PROJECT = "FULLRUN"


@pytest.fixture
def mount(tmp_path):
    where = tmp_path / "small-fs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:  # CI runs as root, where a skip would hide a broken set-up
        why = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_no_room_for_the_run_refuses_it_and_writes_nothing(mount, tmp_path):
    server = XnatServer(mount / "data")
    server.start()
    try:
        server.session().put(f"{server.url}/data/projects/{PROJECT}").raise_for_status()
        with connect(server.url, server.user, server.password) as session:
            set_up(session, PROJECT, tmp_path, cases=3)
            with open(mount / "filler", "wb") as out:  # every free byte taken
                stat = os.statvfs(mount)
                os.posix_fallocate(out.fileno(), 0, stat.f_bavail * stat.f_frsize)
            request = TrainRequest(PROJECT, "tiny", run_id="nospace", work_dir=tmp_path / "work",
                                   cache=tmp_path / "cache")  # fmt: skip
            with pytest.raises(XnatMlError) as refused:
                train_in_project(session, request)
            message = str(refused.value)
            assert "run nospace: cannot be stored in project FULLRUN's ML_RUNS" in message
            assert "HTTP 507" in message and "\n" not in message
            assert not (tmp_path / "work" / "runs" / PROJECT / "nospace").exists()
            (mount / "filler").unlink()
            assert list_paths(session, PROJECT, "ML_RUNS") == []
    finally:
        server.stop()
