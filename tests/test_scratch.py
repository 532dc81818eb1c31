"""Per-process scratch folders: removed at a normal exit, kept while their process lives, swept
by the next process once their process was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from xnat_ml.scratch import sweep

HOLD = "from xnat_ml import scratch; print(scratch.scratch_dir(), flush=True); input()"


def _folders(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")]


def test_scratch_folders_live_and_die_with_their_process(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    exits = subprocess.run([sys.executable, "-c", HOLD], input="\n", env=env, text=True,
                           capture_output=True, check=True)  # fmt: skip
    root = Path(exits.stdout.strip()).parent
    assert root.name == f"xnat-ml-scratch-{os.getuid()}" and _folders(root) == []
    held = subprocess.Popen([sys.executable, "-c", HOLD], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        folder = Path(held.stdout.readline().strip())
        (folder / "weights.pt").write_bytes(b"x" * 1000)
        assert sweep(root) == [] and folder.is_dir()  # its process lives
        held.send_signal(signal.SIGKILL)
        held.wait(timeout=30)
    finally:
        held.kill()
    assert _folders(root) == [folder]  # SIGKILL: nothing could clean up
    assert sweep(root) == [folder] and _folders(root) == []
