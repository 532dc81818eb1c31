"""Model cards: write, read back, strict errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xnat_ml.errors import XnatMlError
from xnat_ml.training.model import (
    CARD_FILE,
    LABELS,
    REGIONS,
    ModelCard,
    Output,
    Ref,
    output_labels,
    parse_paint,
    read_card,
    write_card,
)


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


def test_output_kind_round_trips_and_old_cards_read_as_labels(tmp_path: Path) -> None:
    card = ModelCard(name="t", version="1", task="t", input_channels=["T1", "T2"],
                     labels={0: "background", 1: "Core", 2: "Edema", 4: "Enhancing"},
                     output=Output(REGIONS, ((1, 2), (0, 1), (2, 4))))  # fmt: skip
    write_card(tmp_path, card)
    assert read_card(tmp_path) == card
    assert json.loads((tmp_path / CARD_FILE).read_text())["output"] == \
        {"kind": "regions", "paint": [[1, 2], [0, 1], [2, 4]]}  # fmt: skip
    old = card.to_json()
    del old["output"]
    (tmp_path / CARD_FILE).write_text(json.dumps(old))
    assert read_card(tmp_path).output == Output(LABELS)


@pytest.mark.parametrize(("output", "message"), [
    ({"kind": "regions"}, "output.paint: a 'regions' output needs its paint rule"),
    ({"kind": "regions", "paint": [[0, 1], [1]]}, "output.paint: [1] is not a [channel, value]"),
    ({"kind": "regions", "paint": [[0, 3]]}, "output: paints values [3] that labels does not"),
    ({"kind": "labels", "paint": [[0, 1]]}, "output.paint: only a 'regions' output is painted"),
    ({"kind": "maps"}, "output.kind: expected 'labels' or 'regions'"),
])  # fmt: skip
def test_output_errors_are_one_line(tmp_path: Path, output: dict, message: str) -> None:
    card = ModelCard(name="m", version="1", task="t", labels={0: "bg", 1: "a"},
                     input_channels=["x"])  # fmt: skip
    (tmp_path / CARD_FILE).write_text(json.dumps(card.to_json() | {"output": output}))
    with pytest.raises(XnatMlError) as err:
        read_card(tmp_path)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_paint_option_and_region_labels_from_metadata() -> None:
    meta = {"network_data_format": {"outputs": {"pred": {
        "channel_def": {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}}}}}
    output = parse_paint("1=2, 0=1,2=4")
    assert output == Output(REGIONS, ((1, 2), (0, 1), (2, 4)))
    assert output_labels(meta, output) == \
        {0: "background", 2: "Whole tumor", 1: "Tumor core", 4: "Enhancing tumor"}  # fmt: skip
    assert output_labels(meta, Output()) == {0: "Tumor core", 1: "Whole tumor",
                                             2: "Enhancing tumor"}  # fmt: skip
    with pytest.raises(XnatMlError, match=r"--paint 1:2: expected CHANNEL=VALUE"):
        parse_paint("1:2")
