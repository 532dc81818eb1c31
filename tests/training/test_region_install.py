"""`model install` of a region bundle: its labels come from the paint rule's values, never from
its output channel indices; a card-less sigmoid bundle without a rule is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from template_paths import TEMPLATES

from xnat_ml.training.project_files import list_paths
from xnat_ml.xnat import connect

BRATS = TEMPLATES / "brain-tumour-4ch"


def _install(server, project: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml", "model", "install", *args, "--project", project,
         "--url", server.url, "--user", server.user, "--password", server.password],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_region_bundle_labels_come_from_the_paint_rule(xnat_server, project, tmp_path) -> None:
    zoo = Path(shutil.copytree(BRATS, tmp_path / "brats"))  # as the Model Zoo ships it: no card
    (zoo / "model.json").unlink()
    (zoo / "region2MaskValueMap.txt").unlink()
    refused = _install(xnat_server, project, str(zoo), "--name", "brats")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"xnat-ml: error: bundle {zoo}: its output is sigmoid regions (TC, WT, ET), not labels;"
        " pass --paint CHANNEL=VALUE,... painted in order (BraTS TC/WT/ET: 1=2,0=1,2=4)"]
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        assert list_paths(session, project, "ML_MODELS") == []

    done = _install(xnat_server, project, str(zoo), "--name", "brats", "--paint", "1=2,0=1,2=4")
    assert done.returncode == 0, done.stderr
    assert "(1 TC, 2 WT, 4 ET)" in done.stdout
    shipped = _install(xnat_server, project, str(BRATS), "--name", "tumour")  # its own card
    assert shipped.returncode == 0, shipped.stderr
    for name, labels in (("brats", {"0": "background", "1": "TC", "2": "WT", "4": "ET"}),
                         ("tumour", json.loads((BRATS / "model.json").read_text())["labels"])):
        card = subprocess.run(
            [sys.executable, "-m", "xnat_ml", "model", "show", name, "--project", project,
             "--url", xnat_server.url, "--user", xnat_server.user,
             "--password", xnat_server.password], capture_output=True, text=True, check=True)
        card = json.loads(card.stdout)
        assert card["labels"] == labels
        assert card["output"] == {"kind": "regions", "paint": [[1, 2], [0, 1], [2, 4]]}
