"""The must-show of the datasets issue, on the sample project: the example definition (T1w image
+ tissue label map of each ROI collection) makes a dataset of all 12 sessions that
`xnat-ml dataset fetch` writes out for MONAI, and MONAI loads image and label on one grid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tissues-dataset.json"


def cli(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml", "dataset", *args, "--url", server.url,
         "--user", server.user, "--password", server.password],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_example_definition_gives_all_12_sessions_loadable_by_monai(
    xnat_server, sample_project, tmp_path
):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    built = cli(xnat_server, "build", "--project", sample_project, "--definition", str(EXAMPLE),
                "--name", "tissues", "--strict", "--cache", str(tmp_path / "cache"))  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert "written (12 sessions in (12 subjects), 0 out)" in built.stdout
    # roi-to-mask recorded each image's MD5 and grid: no image file was read for the check
    assert "12 image grids from roi-to-mask records" in built.stdout, built.stdout
    fetched = cli(xnat_server, "fetch", "tissues", "--project", sample_project, "--to",
                  str(tmp_path / "data"), "--cache", str(tmp_path / "cache"))  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    datalist = tmp_path / "data" / "dataset_0.json"
    assert json.loads(datalist.read_text())["labels"] == {
        "0": "background", "1": "Grey Matter", "2": "White Matter"}  # fmt: skip
    splits = {key: load_decathlon_datalist(str(datalist), True, key)
              for key in ("training", "validation", "testing")}  # fmt: skip
    assert all(splits.values()) and sum(len(items) for items in splits.values()) == 12
    item = LoadImaged(keys=["image", "label"])(splits["training"][0])
    assert item["image"].shape == item["label"].shape and len(item["image"].shape) == 3
    assert set(item["label"].unique().tolist()) == {0, 1, 2}
