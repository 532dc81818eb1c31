"""Training configs: the strict reader and its translation into bundle ids."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from template_paths import TEMPLATES

from xnat_ml.errors import XnatMlError
from xnat_ml.training.config import check_against_bundle, load_config, parse_config

GOOD: dict[str, Any] = {
    "model": {"name": "m", "version": "1"},
    "dataset": {"name": "d", "version": "2"},
    "training": {"epochs": 3, "learning_rate": 1e-3, "amp": False, "workers": 0,
                 "patch_size": [32, 32, 32], "device": "cpu"},
    "overrides": {"network_def#out_channels": 3, "train#dataset#cache_rate": 0.5},
    "resources": {"gpus": 1, "cpus": 4, "memory_gb": 16},
}  # fmt: skip


def _with(change) -> dict[str, Any]:
    config = copy.deepcopy(GOOD)
    change(config)
    return config


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(extra=1), r"cfg.json: extra: unknown field"),
        (lambda c: c["training"].update(epoch=3), r"cfg.json: training.epoch: unknown field"),
        (lambda c: c.pop("model"), r"cfg.json: model: missing"),
        (lambda c: c["model"].pop("name"), r"cfg.json: model.name: missing"),
        (lambda c: c["training"].update(epochs="3"), r"training.epochs: expected an integer"),
        (lambda c: c["training"].update(amp="false"), r"training.amp: expected true or false"),
        (lambda c: c["training"].update(epochs=True), r"training.epochs: expected an integer"),
        (lambda c: c["training"].update(epochs=0), r"training.epochs: must be at least 1"),
        (lambda c: c["training"].update(device="gpu"), r"training.device: expected cpu"),
        (lambda c: c["training"].update(patch_size=[32]), r"training.patch_size: expected 2"),
        (lambda c: c["resources"].update(gpus=-1), r"resources.gpus: must be at least 0"),
        (lambda c: c.update(overrides=[]), r"cfg.json: overrides: expected an object"),
    ],
)
def test_bad_configs_are_one_line_naming_the_field(change, expected: str) -> None:
    with pytest.raises(XnatMlError, match=expected) as error:
        parse_config(_with(change), "cfg.json")
    assert "\n" not in str(error.value)


def test_settings_go_to_the_bundles_own_ids(spleen_bundle: Path) -> None:
    config = parse_config(GOOD, "cfg.json")
    overrides = check_against_bundle(config, spleen_bundle)
    assert overrides["epochs"] == 3 and overrides["train#trainer#max_epochs"] == 3
    assert overrides["optimizer#lr"] == 1e-3
    assert overrides["train#trainer#amp"] is False and overrides["validate#evaluator#amp"] is False
    assert overrides["train#random_transforms#0#spatial_size"] == [32, 32, 32]
    assert overrides["validate#inferer#roi_size"] == [32, 32, 32]
    assert overrides["train#dataloader#num_workers"] == 0
    assert "validate#dataset#num_workers" not in overrides  # the bundle has no such id
    assert overrides["device"] == "$torch.device('cpu')"
    assert overrides["network_def#out_channels"] == 3
    assert overrides["train#dataset#cache_rate"] == 0.5  # free-form overrides win


def test_setting_the_bundle_cannot_take_is_an_error(spleen_bundle: Path) -> None:
    config = parse_config(_with(lambda c: c["training"].update(batch_size=2)), "cfg.json")
    check_against_bundle(config, spleen_bundle)  # spleen has train#dataloader#batch_size
    config = parse_config(_with(lambda c: c["training"].update(cache_rate=0.5)), "cfg.json")
    overrides = check_against_bundle(config, spleen_bundle)
    assert overrides["validate#dataset#cache_rate"] == 0.5


@pytest.mark.parametrize("name", ["sample-tissues-cpu", "ct-organ", "brain-tumour-4ch"])
def test_templates_parse_and_fit_their_bundles(name: str) -> None:
    config = load_config(TEMPLATES / f"{name}.json")
    assert config.model.name == name
    overrides = check_against_bundle(config, TEMPLATES / name)
    assert overrides["train#trainer#max_epochs"] == config.training.epochs
