"""Tiny synthetic segmentation data sets (NIfTI written with nibabel) and a data list for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from xnat_ml.training.config import TrainingConfig, parse_config


def write_dataset(
    root: Path, *, n_train: int = 4, n_val: int = 2, size: int = 16, classes: int = 3,
    spacing: float = 2.0, nan_image: bool = False, seed: int = 0,
) -> Path:
    """Blobs in noise: label 1 a ball, label 2 (if ``classes`` is 3) a smaller ball inside it;
    the image is brighter where the label is. Returns the ``dataset_0.json`` path."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)
    entries = []
    for case in range(n_train + n_val):
        centre = size / 2 + rng.uniform(-size / 8, size / 8, 3)
        radius = rng.uniform(size / 4, size / 3)
        distance = np.linalg.norm(grid - centre, axis=-1)
        label = (distance < radius).astype(np.uint8)
        if classes == 3:
            label[distance < radius / 2] = 2
        image = (label * 1.0 + rng.normal(0, 0.2, label.shape) + 0.1).astype(np.float32)
        if nan_image:
            image[:] = np.nan
        name = f"case{case:02d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), root / "images" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labels" / name)
        entries.append({"image": f"images/{name}", "label": f"labels/{name}"})
    datalist = root / "dataset_0.json"
    lists = {"training": entries[:n_train], "validation": entries[n_train:]}
    datalist.write_text(json.dumps(lists))
    return datalist


TINY_NET = {"network_def#channels": [4, 8, 16, 32]}


def tiny_config(
    epochs: int = 2,
    model: str = "sample-tissues-cpu",
    overrides: dict[str, Any] | None = None,
    **training: Any,
) -> TrainingConfig:
    """A few quick epochs on 16^3 volumes with a small network, deterministic."""
    settings = {"epochs": epochs, "val_interval": 1, "patch_size": [16, 16, 16], "batch_size": 2,
                "seed": 7, "workers": 0, "device": "cpu", "amp": False, **training}  # fmt: skip
    return parse_config(
        {"model": {"name": model, "version": "0.1.0"},
         "dataset": {"name": "blobs", "version": "3"},
         "training": settings, "overrides": TINY_NET if overrides is None else overrides},
        "test config",
    )  # fmt: skip
