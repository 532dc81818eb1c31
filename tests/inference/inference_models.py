"""Model folders for the inference tests: the shipped CPU template with random weights, and a
synthetic region model whose network is a fixed module (in the bundle's own scripts/) giving
known overlapping masks. A module of its own name: `from conftest import ...` would find
whichever conftest.py pytest loaded first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
TISSUES = REPO / "training_configs" / "sample-tissues-cpu"
SMALL_TISSUES = {"network_def#channels": [4, 8, 16, 32], "patch_size": [32, 32, 32]}

# TC (channel 0) inside WT (channel 1), ET (channel 2) inside TC: painted WT→2, TC→1, ET→4.
BRATS_PAINT = [[1, 2], [0, 1], [2, 4]]
REGION_CHANNELS = {"0": "TC", "1": "WT", "2": "ET"}
REGION_LABELS = {"0": "background", "1": "Necrotic Core", "2": "Edema", "4": "Enhancing Tumour"}
REGIONS_NET = '''"""Overlapping regions of an image valued 0-3: WT > 0.5, TC > 1.5, ET > 2.5."""

import torch


class Regions(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, :1]
        return torch.cat([(image - 1.5) * 20, (image - 0.5) * 20, (image - 2.5) * 20], dim=1)
'''


def tissues_model(folder: Path) -> Path:
    """sample-tissues-cpu with a small network (card overrides) and random weights saved."""
    from monai.bundle import ConfigParser

    shutil.copytree(TISSUES, folder)
    card = json.loads((folder / "model.json").read_text())
    card["overrides"] = SMALL_TISSUES
    (folder / "model.json").write_text(json.dumps(card))
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser.update(SMALL_TISSUES)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (folder / "models").mkdir()
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder


# The scan criteria of the dataset the tissues model's card names as its lineage.
DEFINITION = {
    "criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "/^T1w/", "ResourceLabel": "NIFTI"},
        "Labels": {"tag": "label", "Source": "roiCollection"}}}],
}  # fmt: skip
LINEAGE = {"name": "tissues-data", "version": "1"}


def tissues_model_with_lineage(session, project: str, folder: Path) -> Path:
    """tissues_model whose card names dataset tissues-data v1, stored in `project` with
    DEFINITION (what infer reads to find a session's input scans)."""
    from xnat_ml.datasets.versions import write_version

    write_version(session, project, LINEAGE["name"], {
        "definition.json": json.dumps(DEFINITION), "dataset_0.json": "{}",
        "report.json": "{}", "report.md": ""})  # fmt: skip
    model = tissues_model(folder)
    card = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**card, "dataset": LINEAGE}))
    return model


def region_model(folder: Path, output: dict | None = None) -> Path:
    """A region bundle with no Invertd: its result is on the model's (RAS) grid."""
    (folder / "configs").mkdir(parents=True)
    (folder / "scripts").mkdir()
    (folder / "models").mkdir()
    (folder / "scripts" / "__init__.py").write_text("")
    (folder / "scripts" / "regions.py").write_text(REGIONS_NET)
    image = "@image_key"
    inference = {
        "imports": ["$import scripts"],
        "bundle_root": ".", "image_key": "image",
        "device": "$torch.device('cpu')",
        "network_def": {"_target_": "scripts.regions.Regions"},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": image},
            {"_target_": "EnsureChannelFirstd", "keys": image},
            {"_target_": "Orientationd", "keys": image, "axcodes": "RAS"},
            {"_target_": "EnsureTyped", "keys": image}]},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"}]},
    }  # fmt: skip
    meta = {"version": "0.1.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0",
            "numpy_version": "2.4.6", "task": "regions",
            "network_data_format": {
                "inputs": {"image": {"num_channels": 1, "spatial_shape": [16, 16, 16],
                                     "channel_def": {"0": "T1ce"}}},
                "outputs": {"pred": {"num_channels": 3,
                                     "channel_def": REGION_CHANNELS}}}}  # fmt: skip
    (folder / "configs" / "inference.json").write_text(json.dumps(inference))
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save({}, folder / "models" / "model.pt")
    card = {"format": "xnat-ml-model-card", "name": "regions", "version": "1", "task": "regions",
            "labels": REGION_LABELS, "input_channels": ["T1ce"],
            "output": output or {"kind": "regions", "paint": BRATS_PAINT}}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(card))
    (folder / "region2MaskValueMap.txt").write_text(
        "".join(f"{n}={v}\n" for v, n in REGION_LABELS.items() if v != "0"))
    return folder


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def flipped(data: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored LPS (i and j reversed) instead of RAS with origin 0: voxel data
    and affine such that every voxel keeps its world position."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[0, 3] = spacing[0] * (data.shape[0] - 1)
    affine[1, 3] = spacing[1] * (data.shape[1] - 1)
    return data[::-1, ::-1].copy(), affine
