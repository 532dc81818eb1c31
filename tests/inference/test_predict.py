"""A bundle's inference on NIfTI files: the result is one integer label volume on the source
grid whatever the model's orientation and spacing; region outputs painted by the card's rule."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from inference_models import SMALL_TISSUES, flipped, region_model, save, tissues_model

from xnat_ml.errors import XnatMlError
from xnat_ml.inference import infer, load_model


def brain(shape=(30, 26, 20)) -> np.ndarray:
    """An off-centre bright blob with a darker rim in noise (asymmetric, so a flip shows)."""
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    distance = np.linalg.norm((grid - (11, 14, 9)) / (8, 6, 5), axis=-1)
    return (np.where(distance < 1, 2.0, 0.0) + np.where(distance < 0.6, 1.0, 0.0)
            + rng.normal(0, 0.1, shape)).astype(np.float32)  # fmt: skip


def nested_regions(shape=(20, 24, 16)) -> np.ndarray:
    """Values 1, 2, 3 from the outside in, off centre: the region model's WT, TC and ET."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    distance = np.linalg.norm(grid - (8, 13, 7), axis=-1)
    return sum((distance < r).astype(np.float32) for r in (6.5, 4.5, 2.5))


def test_template_result_is_on_the_source_grid_in_any_orientation(tmp_path: Path) -> None:
    model = tissues_model(tmp_path / "tissues")
    spacing = (1.5, 1.2, 2.5)  # the model works at 2 mm, RAS
    data = brain()
    ras = save(tmp_path / "ras.nii.gz", data, np.diag([*spacing, 1.0]))
    lps = save(tmp_path / "lps.nii.gz", *flipped(data, spacing))
    result = infer(model, [lps])
    source = nib.load(lps)
    assert result.shape == source.shape and np.allclose(result.affine, source.affine)
    labels = np.asarray(result.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert len(np.unique(labels)) > 1  # random weights, but not a constant answer
    # The same image stored RAS gives the same labels voxel for voxel, in its own voxel order.
    same = np.asarray(infer(model, [ras]).dataobj)
    assert np.array_equal(same, labels[::-1, ::-1])


def test_parsed_model_is_cached_per_folder_and_device(tmp_path: Path) -> None:
    model = tissues_model(tmp_path / "tissues")
    assert load_model(model) is load_model(str(model)) is load_model(model, "cpu")
    assert load_model(model).network is not load_model(region_model(tmp_path / "r")).network


def test_region_model_is_painted_exclusive_and_resampled_back(tmp_path: Path, caplog) -> None:
    model = region_model(tmp_path / "regions")
    data = nested_regions()
    # stored with its axes permuted and two of them reversed, 1 mm: the model works in RAS
    affine = np.array([[0, -1, 0, 30], [0, 0, -1, 20], [1, 0, 0, -8], [0, 0, 0, 1]], float)
    image = save(tmp_path / "t1ce.nii.gz", data, affine)
    with caplog.at_level(logging.INFO, logger="xnat_ml.inference.grid"):
        result = infer(model, [image])
    assert [r.message for r in caplog.records if "resampled" in r.message] != []
    assert result.shape == data.shape and np.allclose(result.affine, affine)
    labels = np.asarray(result.dataobj)
    # WT (values >= 1) → 2, then TC (>= 2) → 1, then ET (3) → 4: later pairs win
    expected = np.choose(data.astype(int), [0, 2, 1, 4])
    assert np.array_equal(labels, expected)
    assert not (model / "eval").exists()  # the bundle's SaveImaged never ran


def test_region_model_without_paint_rule_is_refused(tmp_path: Path) -> None:
    model = region_model(tmp_path / "regions", output={"kind": "regions"})
    image = save(tmp_path / "t1ce.nii.gz", nested_regions(), np.eye(4))
    with pytest.raises(XnatMlError) as err:
        infer(model, [image])
    message = str(err.value)
    assert "output.paint: a 'regions' output needs its paint rule" in message
    assert len(message.splitlines()) == 1


def test_label_model_with_several_output_channels_is_refused(tmp_path: Path) -> None:
    model = region_model(tmp_path / "regions", output={"kind": "labels"})
    image = save(tmp_path / "t1ce.nii.gz", nested_regions(), np.eye(4))
    with pytest.raises(XnatMlError, match="output kind 'labels'.* gives 3 channels"):
        infer(model, [image])


def test_missing_input_channel_is_named(tmp_path: Path) -> None:
    model = tissues_model(tmp_path / "tissues")
    with pytest.raises(XnatMlError, match=r"^input channel T1w: .*gone.nii.gz: no such file$"):
        infer(model, [tmp_path / "gone.nii.gz"])
    with pytest.raises(XnatMlError, match=r"needs 1 input channels \(T1w\), got 2"):
        infer(model, [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"])
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(XnatMlError, match=r"^input channel T1w: .*broken.nii.gz: not a readable"):
        infer(model, [tmp_path / "broken.nii.gz"])


def test_channels_on_different_grids_are_refused(tmp_path: Path) -> None:
    model = region_model(tmp_path / "regions")
    card = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(card | {"input_channels": ["T1ce", "FLAIR"]}))
    t1ce = save(tmp_path / "t1ce.nii.gz", nested_regions(), np.eye(4))
    flair = save(tmp_path / "flair.nii.gz", nested_regions(), np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(XnatMlError, match=r"^input channel FLAIR: .*flair.nii.gz: not on the grid "
                       r"of T1ce"):  # fmt: skip
        infer(model, [t1ce, flair])
    # on one grid, the two files go in as the network's two channels, in the card's order
    flair = save(tmp_path / "flair.nii.gz", np.zeros((20, 24, 16), np.float32), np.eye(4))
    labels = np.asarray(infer(model, [t1ce, flair]).dataobj)
    assert np.array_equal(labels, np.choose(nested_regions().astype(int), [0, 2, 1, 4]))


def test_result_equals_the_bundle_run_bare(tmp_path: Path) -> None:
    """The in-memory path gives what the bundle's own evaluator writes with its SaveImaged."""
    from monai.bundle import ConfigWorkflow

    model = tissues_model(tmp_path / "tissues")
    (tmp_path / "data" / "imagesTs").mkdir(parents=True)
    image = save(tmp_path / "data" / "imagesTs" / "case.nii.gz",
                 *flipped(brain(), (1.5, 1.2, 2.5)))  # fmt: skip
    bare = ConfigWorkflow(config_file=str(model / "configs" / "inference.json"),
                          meta_file=str(model / "configs" / "metadata.json"),
                          logging_file=False, workflow_type="infer",
                          bundle_root=str(model), dataset_dir=str(tmp_path / "data"),
                          output_dir=str(tmp_path / "bare"), device="$torch.device('cpu')",
                          **SMALL_TISSUES)  # fmt: skip
    bare.initialize()
    bare.run()
    written = nib.load(next((tmp_path / "bare").rglob("*.nii.gz")))
    ours = infer(model, [image])
    assert np.allclose(written.affine, ours.affine)
    assert np.array_equal(np.asarray(written.dataobj).squeeze(), np.asarray(ours.dataobj))


def test_weights_that_do_not_fit_and_a_broken_bundle_are_one_line(tmp_path: Path) -> None:
    model = tissues_model(tmp_path / "tissues")
    card = json.loads((model / "model.json").read_text())
    image = save(tmp_path / "t1.nii.gz", brain(), np.eye(4))
    (model / "model.json").write_text(json.dumps(card | {"overrides": {}}))  # full-size network
    with pytest.raises(XnatMlError) as err:
        infer(model, [image])
    assert "models/model.pt does not fit its network (RuntimeError: Error(s) in loading" in \
        str(err.value) and len(str(err.value).splitlines()) == 1  # fmt: skip
    config = json.loads((model / "configs" / "inference.json").read_text())
    config["inferer"]["_target_"] = "NoSuchInferer"
    (model / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(XnatMlError) as err:
        infer(model, [image], device="cpu:0")  # another cache key: parsed afresh
    assert "configs/inference.json does not build (" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
