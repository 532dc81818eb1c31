"""Issue 16's accuracy, on the session's one trained model (the `demo_loop` fixture): the
testing-split Dice that `model evaluate` stored beside the model version equals the Dice of the
label maps that `infer` stored in XNAT (each AI collection's LABELMAP against the annotators'
label map of the session), per case and label and as the mean, within 0.001. Dice is counted
here from the downloaded files, so a result changed on its way into the archive (grid, values,
SEG round trip) shows as a difference."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from demo_loop import DEMO_TIMEOUT_S

from xnat_ml.demo import MODEL
from xnat_ml.layout import LABELMAP_RESOURCE
from xnat_ml.training.derived import latest_evaluation
from xnat_ml.xnat import connect, download_resource, list_experiments, list_rows
from xnat_ml.xnat.uris import experiment_uri, resource_uri

TOLERANCE = 0.001


def _labels(session, assessor: dict, dest) -> nib.Nifti1Image:
    files = download_resource(session, resource_uri(assessor["URI"], LABELMAP_RESOURCE), dest)
    return nib.load(next(p for p in files if p.name == "labels.nii.gz"))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = int(pred.sum()) + int(ref.sum())
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total if total else 1.0


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S)
def test_evaluated_dice_equals_the_dice_of_the_stored_inference(demo_loop, tmp_path):
    project, collections = demo_loop.summary["project"], demo_loop.summary["collections"]
    number = int(demo_loop.summary["model"].split(":")[1])
    with demo_loop.serve() as server, connect(server.url, "admin", "admin") as session:
        record = latest_evaluation(session, project, MODEL, number)
        ids = {row["label"]: row["ID"] for row in list_experiments(session, project)}
        measured: dict[str, list[float]] = {value: [] for value in record["labels"]}
        assert sorted(c["case"] for c in record["cases"]) == sorted(collections)
        for case in record["cases"]:
            rows = list_rows(session, f"{experiment_uri(ids[case['case']])}/assessors")
            [ai] = [r for r in rows if r["label"] == collections[case["case"]]]
            [human] = [r for r in rows if not r["label"].startswith("AI_")]
            pred = _labels(session, ai, tmp_path / case["case"] / "ai")
            ref = _labels(session, human, tmp_path / case["case"] / "human")
            assert pred.shape == ref.shape
            np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-3)
            pred_values, ref_values = np.asarray(pred.dataobj), np.asarray(ref.dataobj)
            for value, name in record["labels"].items():
                dice = _dice(pred_values == int(value), ref_values == int(value))
                stored = case["scores"][value]["dice"]
                assert abs(dice - stored) <= TOLERANCE, (case["case"], name, dice, stored)
                measured[value].append(dice)
    for value, dices in measured.items():
        assert abs(np.mean(dices) - record["mean"][value]["dice"]) <= TOLERANCE, value
    mean = np.mean([np.mean(d) for d in measured.values()])
    assert abs(mean - record["mean"]["all"]["dice"]) <= TOLERANCE
    print(f"testing Dice per case {({c['case']: c['scores'] for c in record['cases']})}; "
          f"mean {mean:.4f} (stored {record['mean']['all']['dice']:.4f})")
