"""The README's training example works as written: its commands, in order, on a copy of the demo
loop's archive (project SAMPLE: 12 subjects with label maps; it already holds the demo's model
versions, so the numbers in the README's comments are one higher here). One change: the config
file is the template with 1 epoch (validation each epoch, no caching), so that train and
finetune take a minute, not 20."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from demo_loop import DEMO_TIMEOUT_S

from xnat_ml.server.process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "training_configs/sample-tissues-cpu.json"


def readme_commands() -> list[list[str]]:
    """The `xnat-ml` lines of the README's Training code block, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Training\n.*?```sh\n(.*?)```", text, re.S)[1]
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.startswith("xnat-ml ")]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S)
def test_the_readme_training_example_runs_as_written(demo_loop, tmp_path):
    commands = readme_commands()
    assert [c[1] for c in commands] == ["config", "model", "dataset", "config", "train", "runs",
                                        "promote", "finetune", "model"]  # fmt: skip
    quick = json.loads((REPO / TEMPLATE).read_text())
    quick["training"].update(epochs=1, val_interval=1, cache_rate=0.0)
    (tmp_path / "sample-tissues-cpu.json").write_text(json.dumps(quick))
    data = shutil.copytree(demo_loop.data, tmp_path / "archive")
    project = demo_loop.summary["project"]
    with ServerProcess(data) as server:
        login = ["--url", server.url, "--user", "admin", "--password", "admin"]
        for words in commands:
            words = [project if w == "P" else w for w in words[1:]]
            words = [str(tmp_path / "sample-tissues-cpu.json") if w == TEMPLATE else w
                     for w in words]  # fmt: skip
            offline = words[:2] == ["config", "templates"]
            done = subprocess.run(
                [sys.executable, "-m", "xnat_ml", *words, *([] if offline else login)],
                capture_output=True, text=True, timeout=900, cwd=REPO,
            )  # fmt: skip
            assert done.returncode == 0, (words, done.stdout[-2000:], done.stderr[-2000:])
            if words[0] == "promote":
                assert "ML_MODELS/tissues/v" in done.stdout, done.stdout
    # The last command, `model show tissues`: the newest version is r1's (the demo's own model
    # is v1, so r1's promotion is v2 here and r2 fine-tuned from the demo's v1).
    card = json.loads(done.stdout)
    assert card["name"] == "tissues" and card["run"] == "r1"
    assert card["parent"]["name"] == "sample-tissues-cpu"
