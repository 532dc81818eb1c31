"""dataset_0.json: read back by MONAI, stored with archive URIs, fetched with local paths."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from records_factory import DEFINITION, LABELMAP_TEXT, FakeInspect, roi, scan, session

from xnat_ml.datasets import (
    build_dataset,
    dumps,
    local_path,
    localize,
    nifti_info,
    parse_definition,
    read_nifti_info,
    uris,
)
from xnat_ml.datasets.nifti import HEADER_BYTES
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import parse_labelmap

MULTI = {
    "criteria": [
        {
            "payload": {
                "t1": {"SeriesDescription": "T1w"},
                "t2": {"SeriesDescription": "T2w"},
                "label": {"Source": "roiCollection"},
            }
        }
    ],
    "channels": ["t1", "t2"],
    "label": "Brain tumour",
    "description": "two channels",
}


def _build(definition=DEFINITION, sessions=None):
    sessions = sessions or [session(n) for n in range(10)]
    return build_dataset(
        parse_definition(definition),
        sessions,
        labelmap=parse_labelmap(LABELMAP_TEXT),
        inspect=FakeInspect(),
    )


def test_stored_datalist_loads_in_monai_for_every_list(tmp_path: Path) -> None:
    doc = _build().datalist
    path = tmp_path / "dataset_0.json"
    path.write_text(dumps(doc))
    for key in ("training", "validation", "testing"):
        loaded = load_decathlon_datalist(path, True, key)
        assert [i["image"] for i in loaded] == [i["image"] for i in doc[key]]  # URIs stay as is
        assert (
            len(loaded)
            == doc[
                {"training": "numTraining", "validation": "numValidation", "testing": "numTesting"}[
                    key
                ]
            ]
        )
    assert (doc["numTraining"], doc["numValidation"], doc["numTesting"]) == (7, 2, 1)


def test_fetched_copy_names_local_paths_monai_joins_to_its_folder(tmp_path: Path) -> None:
    scans = (scan("1", "T1w", "1.1"), scan("2", "T2w", "1.2"))
    doc = _build(
        MULTI, [session(n, scans=scans, rois=(roi(f"R {n}", "1.1"),)) for n in range(4)]
    ).datalist
    assert doc["name"] == "Brain tumour" and doc["description"] == "two channels"
    local = localize(doc, prefix="files")
    (tmp_path / "dataset_0.json").write_text(dumps(local))
    loaded = load_decathlon_datalist(tmp_path / "dataset_0.json", True, "training")
    first = loaded[0]
    assert isinstance(first["image"], list) and len(first["image"]) == 2
    assert first["image"][0] == str(
        tmp_path / "files/experiments/XNAT_E00000/scans/1/resources/NIFTI/files/t1.nii.gz"
    )
    assert first["label"].startswith(str(tmp_path / "files/experiments/XNAT_E0000"))
    assert doc["training"][0]["label"].endswith(
        "/assessors/R%200/resources/LABELMAP/files/labels.nii.gz"
    )
    assert first["label"].endswith("/assessors/R 0/resources/LABELMAP/files/labels.nii.gz")
    assert all(u.startswith("/data/experiments/") for u in uris(doc))
    assert len(uris(doc)) == 4 * 3


def test_output_is_canonical() -> None:
    a = _build(sessions=[session(n) for n in range(10)])
    b = _build(sessions=[session(n) for n in reversed(range(10))])
    assert dumps(a.datalist) == dumps(b.datalist)
    assert dumps(a.report) == dumps(b.report)
    assert list(json.loads(dumps(a.datalist))) == sorted(a.datalist)


@pytest.mark.parametrize(
    "uri",
    [
        "/data/experiments/../x",
        "/data/experiments//x",
        "experiments/x",
        "/data/x/%2F..%2Fy",
        "/data/experiments/%2e%2e/x",
    ],
)
def test_local_path_refuses_escapes(uri: str) -> None:
    with pytest.raises(XnatMlError, match="datalist file"):
        local_path(uri)


def test_local_path_unquotes_segments() -> None:
    assert local_path("/data/experiments/E1/assessors/R%201/files/a%25b.nii.gz", "c") == (
        "c/experiments/E1/assessors/R 1/files/a%b.nii.gz"
    )


def test_nifti_info_from_bytes_header_only_and_values(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 7]
    data = np.zeros((6, 7, 5), dtype=np.uint8)
    data[1:3, 2:4, 1] = 2
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    whole = read_nifti_info(path, values=True)
    assert whole.shape == (6, 7, 5) and np.allclose(whole.affine, affine)
    assert whole.label_values == frozenset({0, 2})
    head = nifti_info(path.read_bytes()[:HEADER_BYTES], values=False, source="labels.nii.gz")
    assert head.shape == whole.shape and head.affine == whole.affine and head.label_values is None
    nib.save(nib.Nifti2Image(data.astype(np.float32) / 3, affine), tmp_path / "f.nii")
    assert read_nifti_info(tmp_path / "f.nii", values=False).shape == (6, 7, 5)  # NIfTI-2
    with pytest.raises(XnatMlError, match="holds non-integer values"):
        read_nifti_info(tmp_path / "f.nii", values=True)
    with pytest.raises(XnatMlError, match="NIfTI file x: not a NIfTI-1 or NIfTI-2 image"):
        nifti_info(b"not a nifti" * 40, values=False, source="x")
