"""`make demo` runs `python -m xnat_ml.demo`: server up, sample built and listed, server down."""

from __future__ import annotations

import re
import socket
import subprocess
import sys


def test_demo_builds_lists_and_stops_the_server(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "xnat_ml.demo", "--data", str(tmp_path / "demo-data"),
         "--subjects", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Project SAMPLE: 1 subjects, 1 sessions" in out
    assert "T1w MPRAGE" in out and "T2w TSE" in out
    assert "ROI collection sub-01_MR1_tissues" in out
    url = re.search(r'xnat\.connect\("(http://127\.0\.0\.1:(\d+))"', out)
    assert url, out
    with socket.socket() as probe:  # the server was stopped on exit
        assert probe.connect_ex(("127.0.0.1", int(url[2]))) != 0
    assert (tmp_path / "demo-data" / "xnat-ml.sqlite").exists()
