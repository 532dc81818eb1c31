"""Model cards: write, read back, strict errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xnat_ml.errors import XnatMlError
from xnat_ml.training.model import CARD_FILE, ModelCard, Ref, read_card, write_card


def test_card_round_trip(tmp_path: Path) -> None:
    card = ModelCard(
        name="tissues", version="2", task="grey/white matter",
        labels={0: "background", 1: "Grey Matter", 2: "White Matter"},
        input_channels=["T1w"], spacing=[2.0, 2.0, 2.0], parent=Ref("tissues", "1"),
        run="run-7", dataset=Ref("tissues", "3"), metrics={"val_mean_dice": 0.9},
        overrides={"network_def#out_channels": 3},
    )  # fmt: skip
    write_card(tmp_path, card)
    assert read_card(tmp_path) == card
    assert json.loads((tmp_path / CARD_FILE).read_text())["labels"]["1"] == "Grey Matter"


def test_card_errors_name_the_field(tmp_path: Path) -> None:
    card = ModelCard(name="m", version="1", task="t", labels={1: "a"}, input_channels=["x"])
    data = card.to_json()
    data["input_channels"] = []
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(XnatMlError, match=r"model.json: input_channels: expected a list"):
        read_card(tmp_path)
    data = card.to_json() | {"colour": "red"}
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(XnatMlError, match=r"model.json: colour: unknown field"):
        read_card(tmp_path)
