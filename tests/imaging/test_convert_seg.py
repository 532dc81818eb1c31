"""`xnat-ml convert seg`: the CLI wiring around read_seg (the reader itself: test_seg.py)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from dicom_factory import write_series

from xnat_ml.cli import main
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series


def test_convert_seg_writes_masks_index_and_labels(tmp_path, capsys):
    ct = write_series(tmp_path / "ct", rows=12, columns=20, slices=5, shuffle_names=True)
    other = write_series(tmp_path / "ct" / "other", slices=2)  # the SEG's series is picked
    series = load_series(ct.folder, ct.series_uid)
    labels = np.zeros(series.shape, np.uint8)
    labels[2:9, 3:7, 1:4] = 1
    labels[12:15, 1:3, 2] = 2
    seg = write_seg(labels, {1: ("Liver", (255, 0, 0)), 2: ("a/../b", (0, 255, 0))}, series,
                    tmp_path / "seg.dcm")  # fmt: skip
    labelmap = tmp_path / "region2MaskValueMap.txt"
    labelmap.write_text("liver=3\n")
    out = tmp_path / "out"
    argv = ["convert", "seg", str(seg), "--series", str(ct.folder), "--out", str(out)]
    assert main([*argv, "--labelmap", str(labelmap)]) == 0
    index = json.loads((out / "masks.json").read_text())
    assert index["files"] == {"Liver": "Liver.nii.gz", "a/../b": "a_.._b.nii.gz"}
    liver = nib.load(out / "Liver.nii.gz")
    np.testing.assert_array_equal(np.asarray(liver.dataobj), (labels == 1).astype(np.uint8))
    np.testing.assert_allclose(liver.affine, series.affine)
    composite = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    np.testing.assert_array_equal(composite, np.where(labels == 1, 3, 0))
    report = json.loads((out / "labels.json").read_text())
    assert [u["roi"] for u in report["unmapped_rois"]] == ["a/../b"]

    # The SEG's series is not the one asked for: one line, nothing written.
    out2 = tmp_path / "out2"
    argv = ["convert", "seg", str(seg), "--series", str(ct.folder), "--out", str(out2)]
    assert main([*argv, "--series-uid", other.series_uid]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("xnat-ml: error: SEG"), err
    assert not out2.exists()
