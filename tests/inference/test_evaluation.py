"""Evaluation core: per-case scores are metrics.label_scores' on infer's result, means per label,
an infinite HD95 written as null with a note, and the three files written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from inference_models import region_model, save
from PIL import Image

from xnat_ml.errors import XnatMlError
from xnat_ml.inference import Case, evaluate, infer, label_scores, write_evaluation
from xnat_ml.inference.evaluation import INFINITE_NOTE

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
LABELS = {1: "Necrotic Core", 2: "Edema", 4: "Enhancing Tumour"}


def _case(folder: Path, name: str, top: float, shift: int) -> Case:
    """An image valued 0-``top`` in nested boxes (the region model paints 2, 1, 4 from the
    outside in) and a reference with labels 2 and 1 only, ``shift`` voxels off."""
    image = np.zeros((16, 16, 16), np.float32)
    image[2:14, 2:14, 2:14] = 1.0
    image[4:12, 4:12, 4:12] = 2.0
    image[6:10, 6:10, 6:10] = top
    ref = np.zeros((16, 16, 16), np.uint8)
    ref[2 + shift : 14, 2:14, 2:14] = 2
    ref[4 + shift : 12, 4:12, 4:12] = 1
    return Case(name, (save(folder / f"{name}.nii.gz", image, AFFINE),),
                save(folder / f"{name}-label.nii.gz", ref, AFFINE))  # fmt: skip


def test_scores_are_label_scores_of_the_inferred_labels(tmp_path: Path) -> None:
    model = region_model(tmp_path / "regions")
    cases = [_case(tmp_path, "A", 3.0, 0), _case(tmp_path, "B", 2.0, 1)]
    overlays: dict[str, bytes] = {}
    result = evaluate(model, cases, {0: "background", **LABELS}, overlays=overlays)
    assert result["labels"] == {"1": "Necrotic Core", "2": "Edema", "4": "Enhancing Tumour"}
    for case, row in zip(cases, result["cases"], strict=True):
        direct = label_scores(infer(model, case.images), nib.load(case.label), [1, 2, 4])
        assert row["case"] == case.id
        for value, scores in direct.items():
            got = row["scores"][str(value)]
            assert got["dice"] == pytest.approx(scores.dice, abs=1e-6)
            assert got["volume_difference_ml"] == pytest.approx(scores.volume_difference, abs=1e-6)
            assert got["hd95_mm"] == (None if np.isinf(scores.hd95) else scores.hd95)
    # A predicts enhancing tumour (4) that its reference lacks: HD95 infinite → null, noted;
    # B has no 4 on either side: Dice 1, HD95 0
    assert result["cases"][0]["scores"]["4"] == {**result["cases"][0]["scores"]["4"],
                                                 "dice": 0.0, "hd95_mm": None}  # fmt: skip
    assert result["cases"][1]["scores"]["4"]["hd95_mm"] == 0.0
    assert result["notes"] == [INFINITE_NOTE]
    assert result["mean"]["4"]["hd95_mm"] == 0.0  # over the finite one only
    assert result["cases"][0]["scores"]["2"]["dice"] == 1.0  # the edema shell is exact in A
    for value in ("1", "2", "4"):
        dice = [row["scores"][value]["dice"] for row in result["cases"]]
        assert result["mean"][value]["dice"] == pytest.approx(sum(dice) / 2)
    assert result["mean"]["all"]["dice"] == pytest.approx(
        sum(result["mean"][v]["dice"] for v in ("1", "2", "4")) / 3)

    record = {"model": {"name": "regions", "version": "1"},
              "dataset": {"name": "d", "version": "2"}, "split": "testing", **result}
    files = write_evaluation(record, tmp_path / "out", overlays)
    stored = json.loads(files["metrics.json"].read_text())
    assert stored["format"] == "xnat-ml-evaluation" and stored["cases"] == result["cases"]
    table = files["metrics.md"].read_text()
    assert "regions v1 on d v2 (testing, 2 cases)" in table
    assert "| A | Enhancing Tumour | 0.0000 | — |" in table and INFINITE_NOTE in table
    assert Image.open(files["dice.png"]).format == "PNG"
    assert sorted(overlays) == ["A", "B"]  # each case's prediction over its image
    for case in ("A", "B"):
        with Image.open(files[f"overlays/{case}.png"]) as overlay:
            assert (overlay.format, overlay.size) == ("PNG", (256, 256))


def test_no_cases_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(XnatMlError, match="evaluation: no cases to score"):
        evaluate(region_model(tmp_path / "regions"), [], LABELS)


def test_a_case_that_cannot_be_scored_is_named(tmp_path: Path) -> None:
    model = region_model(tmp_path / "regions")
    good = _case(tmp_path, "A", 3.0, 0)
    shifted = tmp_path / "other-grid.nii.gz"
    save(shifted, np.zeros((16, 16, 16), np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    for label, message in ((shifted, "case B: label volumes: not on one grid"),
                           (broken, f"case B: label {broken}: not a readable NIfTI")):
        with pytest.raises(XnatMlError, match=f"^{message}"):
            evaluate(model, [good, Case("B", good.images, label)], LABELS)
