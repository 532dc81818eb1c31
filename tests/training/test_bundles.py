"""Bundle folders as published: what passes, and the one-line errors for what does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from template_paths import TEMPLATES

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import TRAIN_CONFIG, bundle_digests, validate_bundle
from xnat_ml.training.model import validate_model


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_spleen_bundle_validates_as_published(spleen_bundle: Path) -> None:
    before = bundle_digests(spleen_bundle)
    meta = validate_bundle(spleen_bundle)
    assert meta["version"] == "0.5.9"
    assert bundle_digests(spleen_bundle) == before


@pytest.mark.parametrize("name", ["sample-tissues-cpu", "ct-organ", "brain-tumour-4ch"])
def test_template_models_validate(name: str) -> None:
    card, labelmap = validate_model(TEMPLATES / name)
    assert card.name == name
    assert {label.value for label in labelmap.labels} == set(card.labels) - {0}


def test_missing_required_id_is_one_line_naming_it(spleen_bundle: Path) -> None:
    _edit(spleen_bundle / TRAIN_CONFIG, lambda d: d["validate"]["dataset"].pop("data"))
    with pytest.raises(XnatMlError) as error:
        validate_bundle(spleen_bundle)
    message = str(error.value)
    assert "validate#dataset#data" in message and "train.json" in message
    assert "\n" not in message


def test_missing_top_level_id(spleen_bundle: Path) -> None:
    _edit(spleen_bundle / TRAIN_CONFIG, lambda d: d.pop("dataset_dir"))
    with pytest.raises(XnatMlError, match=r"lacks the required id 'dataset_dir'"):
        validate_bundle(spleen_bundle)


def test_broken_json_names_the_file(spleen_bundle: Path) -> None:
    path = spleen_bundle / "configs" / "inference.json"
    path.write_text(path.read_text()[:-10])
    with pytest.raises(XnatMlError) as error:
        validate_bundle(spleen_bundle)
    message = str(error.value)
    assert "inference.json is not valid JSON (line" in message and "\n" not in message


def test_missing_metadata(spleen_bundle: Path) -> None:
    (spleen_bundle / "configs" / "metadata.json").unlink()
    with pytest.raises(XnatMlError, match=r"metadata.json is missing"):
        validate_bundle(spleen_bundle)


@pytest.mark.parametrize(
    ("name", "channels", "outputs"),
    [("sample-tissues-cpu", 1, 3), ("ct-organ", 1, 2), ("brain-tumour-4ch", 4, 3)],
)
def test_template_bundles_build(name: str, channels: int, outputs: int) -> None:
    """Every component of the template's train.json instantiates, the network runs."""
    import torch

    from xnat_ml.training.bundle import open_train_workflow

    workflow = open_train_workflow(
        TEMPLATES / name, {"train#dataset#data": [], "validate#dataset#data": []}
    )
    workflow.initialize()
    parser = workflow.parser
    for config_id in ("train#preprocessing", "validate#preprocessing", "loss", "optimizer",
                      "train#postprocessing", "validate#inferer", "validate#key_metric"):
        assert parser.get_parsed_content(config_id) is not None, config_id
    network = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        out = network(torch.zeros(1, channels, 32, 32, 32))
    assert out.shape == (1, outputs, 32, 32, 32)
