"""Tiny synthetic segmentation data sets (NIfTI written with nibabel) and a data list for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from xnat_ml.training.config import TrainingConfig, parse_config


def write_dataset(
    root: Path, *, n_train: int = 4, n_val: int = 2, size: int = 16,
    values: tuple[int, ...] = (1, 2), channels: int = 1, spacing: float = 2.0,
    nan_image: bool = False, seed: int = 0,
) -> Path:
    """Nested balls in noise, labelled ``values`` from the outside in (radius halving each
    time); every image channel is brighter where the label is. With several ``channels`` an
    entry's ``image`` is the list of its channel files, in order. Returns ``dataset_0.json``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)
    entries = []
    for case in range(n_train + n_val):
        centre = size / 2 + rng.uniform(-size / 8, size / 8, 3)
        distance = np.linalg.norm(grid - centre, axis=-1)
        radius = rng.uniform(size / 4, size / 3)
        label = np.zeros(distance.shape, np.uint8)
        for depth, value in enumerate(values):
            label[distance < radius / 2**depth] = value
        images = []
        for channel in range(channels):
            image = ((label > 0) * (1.0 + channel) + rng.normal(0, 0.2, label.shape) + 0.1)
            if nan_image:
                image[:] = np.nan
            name = f"case{case:02d}_{channel}.nii.gz"
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "images" / name)
            images.append(f"images/{name}")
        nib.save(nib.Nifti1Image(label, affine), root / "labels" / f"case{case:02d}.nii.gz")
        entries.append({"image": images if channels > 1 else images[0],
                        "label": f"labels/case{case:02d}.nii.gz"})  # fmt: skip
    datalist = root / "dataset_0.json"
    lists = {"training": entries[:n_train], "validation": entries[n_train:]}
    datalist.write_text(json.dumps(lists))
    return datalist


TINY_NET = {"network_def#channels": [4, 8, 16, 32]}


def tiny_config(
    epochs: int = 2,
    model: str = "sample-tissues-cpu",
    overrides: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
    **training: Any,
) -> TrainingConfig:
    """A few quick epochs on 16^3 volumes with a small network, deterministic."""
    settings = {"epochs": epochs, "val_interval": 1, "patch_size": [16, 16, 16], "batch_size": 2,
                "seed": 7, "workers": 0, "device": "cpu", "amp": False, **training}  # fmt: skip
    return parse_config(
        {"model": {"name": model, "version": "0.1.0"},
         "dataset": {"name": "blobs", "version": "3"},
         "training": settings, "overrides": TINY_NET if overrides is None else overrides,
         "resources": resources or {}},
        "test config",
    )  # fmt: skip
