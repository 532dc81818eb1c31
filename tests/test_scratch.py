"""Per-process scratch folders: removed at a normal exit, kept while their process lives, swept
by the next process once their process was killed."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import xnat_ml
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


# tempfile calls without `dir=` (so in $TMPDIR, not a scratch folder) and why each may stay.
OUTSIDE_SCRATCH = {
    ("server/store/schema.py", "TemporaryDirectory"): "a developer's empty database at head",
    ("containers/cli.py", "mkdtemp"): "`containers run` keeps it: it prints where the logs are",
    ("training/runner.py", "TemporaryDirectory"): "ranks above 0 of a training job",
    ("datasets/inspector.py", "TemporaryFile"): "an unnamed file, gone with its process",
}
TEMPFILE_CALLS = {"TemporaryDirectory", "mkdtemp", "mkstemp", "NamedTemporaryFile",
                  "TemporaryFile", "SpooledTemporaryFile"}  # fmt: skip


def test_temporary_folders_for_user_data_are_scratch_folders():
    """Every temporary file or folder of xnat_ml is made beside its target (`dir=`) or by
    scratch.temporary, apart from the few listed: a new `TemporaryDirectory(prefix="xnat-ml-")`
    would leave a killed command's data in /tmp for good."""
    root = Path(xnat_ml.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        if path.name == "scratch.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in TEMPFILE_CALLS
                    and not any(k.arg == "dir" for k in node.keywords)):  # fmt: skip
                found.add((path.relative_to(root).as_posix(), node.func.attr))
    assert found == set(OUTSIDE_SCRATCH)
