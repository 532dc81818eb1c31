"""A project on the embedded server set up for training: tiny labelled sessions, a dataset version
built from them, the sample-tissues-cpu model installed and a quick training config pushed."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from synthetic import TINY_NET

from xnat_ml.assets import shipped_dir
from xnat_ml.datasets.project_build import build_in_project
from xnat_ml.sample.synthetic import SynthRoi, SynthScan, add_session, nifti_bytes
from xnat_ml.training.project_configs import push_config
from xnat_ml.training.project_models import install_model

SIZE = 16
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
DEFINITION = {
    "criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "T1w"},
        "Labels": {"tag": "label", "Source": "roiCollection"}}}],
    "labelmap": "ML_MODELS/region2MaskValueMap.txt",
    "split": {"training": 67, "validation": 33, "testing": 0, "seed": 1},
}  # fmt: skip


def tiny_config(epochs: int = 2, **extra) -> dict:
    """A training config (as stored in ML_CONFIGS) for a few quick epochs on the tiny data."""
    return {
        "model": {"name": "tissues", "version": ""},
        "dataset": {"name": "blobs", "version": ""},
        "training": {"epochs": epochs, "val_interval": 1, "patch_size": [SIZE] * 3,
                     "batch_size": 2, "seed": 7, "workers": 0, "device": "cpu", "amp": False},
        "overrides": TINY_NET,
        **extra,
    }  # fmt: skip


def _case(rng: np.random.Generator) -> tuple[bytes, bytes]:
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"), axis=-1)
    distance = np.linalg.norm(grid - (SIZE / 2 + rng.uniform(-2, 2, 3)), axis=-1)
    radius = rng.uniform(SIZE / 4, SIZE / 3)
    label = np.zeros(distance.shape, np.uint8)
    label[distance < radius] = 1
    label[distance < radius / 2] = 2
    image = (label > 0) + rng.normal(0, 0.2, label.shape) + 0.1
    return (nifti_bytes(image, AFFINE, "float32"), nifti_bytes(label, AFFINE))


@dataclass
class TrainingProject:
    id: str
    url: str
    user: str
    password: str

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`xnat-ml VERB ... --url ... --user ... --password ...` as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "xnat_ml", *args, "--url", self.url, "--user", self.user,
             "--password", self.password],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


def archive_file(data_dir: Path, project: str, label: str, path: str) -> Path:
    """Where the embedded server keeps a project resource's file on disk: a test changes it
    there, as someone with the server's file system (not its REST API) would."""
    [found] = (data_dir / "archive" / project / "resources").glob(f"*/{path}")
    return found


def set_up(session, project: str, work: Path, cases: int = 6) -> None:
    rng = np.random.default_rng(0)
    session.put(f"/data/projects/{project}/resources/ML_MODELS/files/region2MaskValueMap.txt",
                data=b"Grey Matter=1\nWhite Matter=2\n", query={"overwrite": "true"},
                headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    for i in range(cases):
        image, label = _case(rng)
        uid = f"1.2.3.{i}"
        add_session(session, project, f"S{i}", f"S{i}_MR", [SynthScan("1", "T1w", uid, image)],
                    [SynthRoi(f"R{i}", uid, label)])  # fmt: skip
    build_in_project(session, project, json.dumps(DEFINITION), "blobs")
    # The template as shipped (not conftest's path: other test folders import this module too)
    install_model(session, project, shipped_dir("training_configs") / "sample-tissues-cpu",
                  "tissues")  # fmt: skip
    config = work / "tiny.json"
    config.write_text(json.dumps(tiny_config()))
    push_config(session, project, config)
