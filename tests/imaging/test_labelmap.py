"""Label maps: both file forms, hostile files, alias matching, composition and its report."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_series

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import (
    MAX_FILE_BYTES,
    compose,
    load_labelmap,
    parse_json_labelmap,
    parse_text_labelmap,
    read_labels,
    write_labels,
)
from xnat_ml.imaging.series import as_nifti, load_series

XNAT_ML_EXAMPLE = "Liver=10\nSpleen=20\nKidney=30\n"

JSON_EXAMPLE = {
    "format": "xnat-ml-labelmap",
    "version": 1,
    "labels": [
        {
            "name": "liver",
            "value": 1,
            "aliases": ["Leber", "/^liver[_ ]?\\d+$/i", "/^liver \\(ai\\)$/i"],
            "color": [220, 90, 60],
        },
        {"name": "tumour", "value": 2, "aliases": ["tumor", "/lesion/i"], "priority": 10},
        {"name": "spleen", "value": 3},
    ],
}


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- region2MaskValueMap.txt ----------------------------------------------------------------


def test_xnat_ml_text_file(tmp_path):
    path = write(tmp_path, "region2MaskValueMap.txt", XNAT_ML_EXAMPLE)
    labelmap = load_labelmap(path)
    assert [(lab.name, lab.value) for lab in labelmap.labels] == [
        ("Liver", 10),
        ("Spleen", 20),
        ("Kidney", 30),
    ]
    assert labelmap.match("liver")[0].value == 10  # case-insensitive
    assert labelmap.match("  KIDNEY ")[0].value == 30
    assert labelmap.match("Liver_1") == []  # plain names have no aliases
    assert labelmap.segments()[20][0] == "Spleen"


def test_text_comments_blank_lines_bom_spaces_and_equals_in_names(tmp_path):
    text = "\ufeff# model v2\n\n  Left  lung = 1 \r\nA=B=2\n   # indented comment\n"
    labelmap = load_labelmap(write(tmp_path, "map.txt", text))
    assert [(lab.name, lab.value) for lab in labelmap.labels] == [("Left  lung", 1), ("A=B", 2)]
    assert labelmap.match("left lung")[0].value == 1  # runs of spaces compare as one


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Liver=10\nSpleen 20\n", "line 2: expected Label=Value"),
        ("Liver=ten\n", "line 1: value 'ten' is not an integer"),
        ("Liver=0\n", "line 1: value 0 outside 1..255"),
        ("Liver=256\n", "line 1: value 256 outside 1..255"),
        ("Liver=-3\n", "line 1: value -3 outside 1..255"),
        ("Liver=1.5\n", "is not an integer"),
        ("Liver=99999999999999999999\n", "is not an integer"),
        ("=4\n", "line 1: empty label name"),
        ("Liver=1\nSpleen=1\n", "line 2: value 1 already used by label 'Liver'"),
        ("Liver=1\nLIVER=2\n", "line 2: name 'liver' already used by label 'Liver'"),
        ("# only comments\n\n", "defines no labels"),
        ("", "defines no labels"),
        ("Li\x00ver=1\n", "control characters"),
        ("X" * 300 + "=1\n", "longer than 256 characters"),
    ],
)
def test_broken_text_files_name_file_and_line(tmp_path, text, problem):
    path = write(tmp_path, "region2MaskValueMap.txt", text)
    with pytest.raises(XnatMlError, match="region2MaskValueMap.txt") as err:
        load_labelmap(path)
    assert problem in str(err.value)
    assert "\n" not in str(err.value)


def test_hostile_files(tmp_path):
    with pytest.raises(XnatMlError, match="not UTF-8"):
        load_labelmap(
            write(tmp_path, "latin1.txt", "Leber=1\nMilz=2\nNiere=3\xe9\n".encode("latin-1"))
        )
    with pytest.raises(XnatMlError, match="not UTF-8"):
        load_labelmap(write(tmp_path, "random.bin", bytes(range(256)) * 4))
    with pytest.raises(XnatMlError, match="too large"):
        load_labelmap(write(tmp_path, "huge.txt", "a=1\n" + "#" * MAX_FILE_BYTES))
    with pytest.raises(XnatMlError, match="cannot be read"):
        load_labelmap(tmp_path / "missing.txt")
    with pytest.raises(XnatMlError, match="cannot be read"):
        load_labelmap(tmp_path)  # a directory


# --- JSON form ----------------------------------------------------------------------------


def test_json_aliases_make_one_value_of_many_spellings(tmp_path):
    labelmap = load_labelmap(write(tmp_path, "labels.json", json.dumps(JSON_EXAMPLE)))
    for name in ("liver", "Liver_1", "LIVER (AI)", "liver 2", "LEBER"):
        assert [lab.value for lab in labelmap.match(name)] == [1], name
    assert [lab.value for lab in labelmap.match("Lesion 3")] == [2]
    assert labelmap.match("liverish") == []
    assert labelmap.by_value(1).color == (220, 90, 60)
    assert labelmap.by_value(3).color is None and len(labelmap.segments()[3][1]) == 3
    assert labelmap.by_value(2).priority == 10


def test_json_round_trips_through_to_json():
    labelmap = parse_json_labelmap(json.dumps(JSON_EXAMPLE))
    again = parse_json_labelmap(json.dumps(labelmap.to_json()))
    assert again.to_json() == labelmap.to_json()
    assert again.match("LIVER (AI)")[0].value == 1


def test_json_sniffed_without_json_suffix(tmp_path):
    labelmap = load_labelmap(write(tmp_path, "region2MaskValueMap.txt", json.dumps(JSON_EXAMPLE)))
    assert len(labelmap.labels) == 3


def test_exact_names_win_over_patterns_and_several_patterns_are_ambiguous():
    labelmap = parse_json_labelmap(
        json.dumps(
            {
                "labels": [
                    {"name": "kidney", "value": 1, "aliases": ["/kidney/i"]},
                    {"name": "left kidney", "value": 2, "aliases": ["/left/i"]},
                ]
            }
        )
    )
    assert [lab.value for lab in labelmap.match("Left Kidney")] == [2]  # exact name
    assert sorted(lab.value for lab in labelmap.match("kidney left upper")) == [1, 2]


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[1, 2]", 'expected an object with a "labels" list'),
        ('{"labels": {}}', 'expected an object with a "labels" list'),
        ('{"labels": [], "format": "other"}', "unsupported format"),
        ('{"labels": [], "version": 2}', "unsupported format"),
        ('{"labels": [], "extra": 1}', "unknown keys ['extra']"),
        ('{"labels": []}', "defines no labels"),
        ('{"labels": [3]}', "labels[0]: expected an object, got int"),
        ('{"labels": [{"value": 1}]}', 'labels[0]: "name" must be a string'),
        ('{"labels": [{"name": "a"}]}', "labels[0]: value None is not an integer"),
        ('{"labels": [{"name": "a", "value": true}]}', "value True is not an integer"),
        ('{"labels": [{"name": "a", "value": 1.0}]}', "value 1.0 is not an integer"),
        ('{"labels": [{"name": "a", "value": 300}]}', "value 300 outside 1..255"),
        ('{"labels": [{"name": "a", "value": 1, "colour": [1,2,3]}]}', "unknown keys ['colour']"),
        ('{"labels": [{"name": "a", "value": 1, "color": [1,2]}]}', '"color" must be [r, g, b]'),
        ('{"labels": [{"name": "a", "value": 1, "color": [1,2,256]}]}', '"color" must be'),
        ('{"labels": [{"name": "a", "value": 1, "color": "#ff0000"}]}', '"color" must be'),
        ('{"labels": [{"name": "a", "value": 1, "priority": "high"}]}', '"priority" must be'),
        ('{"labels": [{"name": "a", "value": 1, "aliases": "b"}]}', '"aliases" must be a list'),
        ('{"labels": [{"name": "a", "value": 1, "aliases": [1]}]}', '"aliases" must be a list'),
        ('{"labels": [{"name": "a", "value": 1, "aliases": ["/(/i"]}]}', "not a valid regex"),
        ('{"labels": [{"name": "a", "value": 1, "aliases": ["/a/g"]}]}', "flags other than i"),
        (
            '{"labels": [{"name": "a", "value": 1}, {"name": "b", "value": 2, "aliases": ["A"]}]}',
            "labels[1]: name 'a' already used by label 'a'",
        ),
        (
            '{"labels": [{"name": "a", "value": 1}, {"name": "b", "value": 1}]}',
            "labels[1]: value 1 already used by label 'a'",
        ),
        ("[" * 100000 + "]" * 100000, "label map"),
    ],
)
def test_broken_json_files(tmp_path, doc, problem):
    path = write(tmp_path, "labels.json", doc)
    with pytest.raises(XnatMlError) as err:
        load_labelmap(path)
    assert "labels.json" in str(err.value)
    assert problem in str(err.value)


# --- compose ------------------------------------------------------------------------------


def box(shape, *slices):
    mask = np.zeros(shape, bool)
    mask[slices] = True
    return mask


def test_compose_maps_aliases_reports_unmapped_and_empty_labels():
    labelmap = parse_json_labelmap(json.dumps(JSON_EXAMPLE), "model.json")
    shape = (8, 6, 4)
    masks = {
        "Liver_1": box(shape, slice(0, 4), slice(0, 3), slice(0, 2)),
        "LIVER (AI)": box(shape, slice(4, 6), slice(0, 3), slice(0, 2)),
        "Heart": box(shape, slice(0, 2), slice(4, 6), slice(3, 4)),
        "lesion liver": box(shape, 0, 0, 0),  # only /lesion/i matches: tumour, priority 10
    }
    labels, report = compose(masks, labelmap)
    assert labels.dtype == np.uint8 and labels.shape == shape
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 1).sum() == 6 * 3 * 2 - 1
    liver = report["labels"][0]
    assert liver["value"] == 1 and liver["name"] == "liver" and liver["voxels"] == 35
    assert [r["roi"] for r in liver["rois"]] == ["Liver_1", "LIVER (AI)"]
    assert report["unmapped_rois"] == [{"roi": "Heart", "voxels": 4, "reason": "no label matches"}]
    assert report["labels_without_roi"] == [{"value": 3, "name": "spleen"}]
    assert report["labelmap"] == "model.json"
    json.dumps(report)  # serialisable as is


def test_overlaps_follow_priority_then_file_order_and_are_counted():
    labelmap = parse_json_labelmap(
        json.dumps(
            {
                "labels": [
                    {"name": "organ", "value": 1},
                    {"name": "tumour", "value": 2, "priority": 5},
                    {"name": "vessel", "value": 3},
                ]
            }
        )
    )
    shape = (10, 10, 3)
    organ = box(shape, slice(0, 8), slice(0, 8), slice(None))
    tumour = box(shape, slice(2, 4), slice(2, 4), slice(None))  # inside organ: 12 voxels
    vessel = box(shape, slice(3, 10), 3, slice(None))  # crosses organ, tumour and outside
    labels, report = compose({"organ": organ, "tumour": tumour, "vessel": vessel}, labelmap)
    assert np.all(labels[tumour] == 2)  # highest priority wins everywhere
    # organ vs vessel: equal priority, organ is listed first in the label map, so it wins
    assert np.all(labels[organ & vessel & ~tumour] == 1)
    assert np.all(labels[vessel & ~organ] == 3)
    overlaps = {tuple(o["rois"]): o for o in report["overlaps"]}
    assert overlaps[("organ", "tumour")]["voxels"] == 12
    assert overlaps[("organ", "tumour")]["winner"] == "tumour"
    assert overlaps[("organ", "vessel")]["voxels"] == 5 * 3
    assert overlaps[("organ", "vessel")]["winner"] == "organ"
    assert overlaps[("tumour", "vessel")]["voxels"] == 1 * 3
    assert overlaps[("tumour", "vessel")]["winner"] == "tumour"
    assert "priority" in report["overlap_rule"]


def test_text_map_order_is_the_tie_break():
    labelmap = parse_text_labelmap("B=2\nA=1\n")
    shape = (4, 4, 1)
    a, b = box(shape, slice(0, 3)), box(shape, slice(1, 4))
    labels, report = compose({"A": a, "B": b}, labelmap)
    assert np.all(labels[a & b] == 2)  # B listed first
    assert report["overlaps"][0]["voxels"] == 8 and report["overlaps"][0]["winner"] == "B"


def test_same_label_overlap_is_reported_without_a_winner():
    labelmap = parse_json_labelmap(
        json.dumps({"labels": [{"name": "liver", "value": 7, "aliases": ["/liver/i"]}]})
    )
    shape = (4, 4, 2)
    labels, report = compose(
        {"liver a": box(shape, slice(0, 3)), "liver b": box(shape, slice(2, 4))}, labelmap
    )
    assert (labels == 7).sum() == 32
    assert report["overlaps"] == [
        {"rois": ["liver a", "liver b"], "values": [7, 7], "voxels": 8, "winner": None}
    ]


def test_ambiguous_roi_is_unmapped_with_reason():
    labelmap = parse_json_labelmap(
        json.dumps(
            {
                "labels": [
                    {"name": "a", "value": 1, "aliases": ["/kid/i"]},
                    {"name": "b", "value": 2, "aliases": ["/ney/i"]},
                ]
            }
        )
    )
    labels, report = compose({"Kidney": np.ones((2, 2, 2), bool)}, labelmap)
    assert not labels.any()
    assert report["unmapped_rois"][0]["reason"] == "matches several labels: a, b"


def test_compose_refuses_mixed_grids_and_needs_a_shape_when_empty():
    labelmap = parse_text_labelmap("a=1\n")
    with pytest.raises(XnatMlError, match="shapes differ"):
        compose({"a": np.ones((2, 2, 2)), "b": np.ones((2, 2, 3))}, labelmap)
    with pytest.raises(XnatMlError, match="none given"):
        compose({}, labelmap)
    labels, report = compose({}, labelmap, shape=(3, 3, 3))
    assert labels.shape == (3, 3, 3) and not labels.any()
    assert report["labels_without_roi"] == [{"value": 1, "name": "a"}]


# --- writing ------------------------------------------------------------------------------


def test_write_labels_in_series_grid(tmp_path):
    write_series(tmp_path / "ct", rows=6, columns=9, slices=3, pixel_spacing=(0.5, 0.8))
    series = load_series(tmp_path / "ct")
    labelmap = parse_text_labelmap(XNAT_ML_EXAMPLE)
    liver = box(series.shape, slice(0, 4), slice(1, 5), 1)
    labels, report = compose({"liver": liver}, labelmap)
    out = tmp_path / "out"
    nifti_path, json_path = write_labels(labels, report, series, out)
    image = nib.load(nifti_path)
    assert image.shape == series.shape
    assert image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, series.affine)
    assert image.header.get_intent()[0] == "label"
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)
    assert json.loads(json_path.read_text())["labels"][0]["voxels"] == 16
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.nii.gz"]


def test_write_labels_leaves_nothing_behind_on_failure(tmp_path):
    write_series(tmp_path / "ct", rows=4, columns=4, slices=2)
    series = load_series(tmp_path / "ct")
    labels = np.zeros(series.shape, np.uint8)
    out = tmp_path / "out"
    with pytest.raises(TypeError):
        write_labels(labels, {"not serialisable": object()}, series, out)
    assert list(out.iterdir()) == []
    with pytest.raises(XnatMlError, match="does not match series grid"):
        write_labels(np.zeros((4, 4, 3), np.uint8), {}, series, out)
    assert list(out.iterdir()) == []


def test_memory_order_and_mask_dtype_do_not_change_the_result():
    """Fortran-ordered uint8 masks (as NIfTI data and the RTSTRUCT rasteriser give) compose
    exactly as C-ordered bool masks do."""
    rng = np.random.default_rng(1)
    a, b = rng.random((7, 5, 3)) > 0.5, rng.random((7, 5, 3)) > 0.6
    labelmap = parse_text_labelmap("a=1\nb=2\n")
    labels_c, report_c = compose({"a": a, "b": b}, labelmap)
    labels_f, report_f = compose(
        {"a": np.asfortranarray(a.astype(np.uint8)), "b": np.asfortranarray(b)}, labelmap
    )
    np.testing.assert_array_equal(labels_c, labels_f)
    assert report_c == report_f
    assert report_c["overlaps"][0]["voxels"] == int((a & b).sum())


def test_labels_come_back_in_nifti_layout_whatever_the_masks_order():
    """NIfTI's (Fortran) layout, as Series arrays: nibabel writes it without a transposing copy."""
    a = np.random.default_rng(2).random((7, 5, 3)) > 0.5
    labelmap = parse_text_labelmap("a=1\nb=2\n")
    cases = [({"a": a}, 1), ({"a": np.asfortranarray(a)}, 1), ({}, 0),
             ({"a": a, "b": np.asfortranarray(a)}, 1)]  # fmt: skip  (mixed orders; a wins the tie)
    for masks, value in cases:
        labels, _report = compose(masks, labelmap, shape=a.shape)
        assert labels.flags.f_contiguous and labels.shape == a.shape
        np.testing.assert_array_equal(labels, a.astype(np.uint8) * value)


# --- reading label images back (model output → SEG/RTSTRUCT) ----------------------------------


@pytest.fixture
def oblique(tmp_path):
    c, s = np.cos(0.5), np.sin(0.5)
    write_series(
        tmp_path / "ct",
        rows=7,
        columns=9,
        slices=4,
        pixel_spacing=(0.8, 1.2),
        slice_spacing=2.0,
        orientation=(c, s, 0.0, 0.0, 0.0, -1.0),
    )
    series = load_series(tmp_path / "ct")
    labels = np.zeros(series.shape, np.uint8)
    labels[1:5, 2:6, 1:3] = 3
    labels[6:8, 0:2, 3] = 250
    return series, labels


def test_read_labels_undoes_reorientation_only(oblique, tmp_path):
    series, labels = oblique
    nifti_path, _ = write_labels(labels, {}, series, tmp_path / "out")
    np.testing.assert_array_equal(read_labels(nifti_path, series), labels)
    # Saved RAS-canonical, as some pipelines do: axes permuted and flipped, same voxels.
    canonical = nib.as_closest_canonical(as_nifti(labels, series))
    assert canonical.shape != series.shape or not np.allclose(canonical.affine, series.affine)
    nib.save(canonical, tmp_path / "canonical.nii.gz")
    back = read_labels(tmp_path / "canonical.nii.gz", series)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    # Float storage of whole numbers is fine; wide values come back as uint16.
    nib.save(as_nifti(labels.astype(np.float32) * 4, series), tmp_path / "float.nii.gz")
    back = read_labels(tmp_path / "float.nii.gz", series)
    assert back.dtype == np.uint16 and back.max() == 1000


def test_read_labels_refuses_other_grids_and_values(oblique, tmp_path):
    series, labels = oblique
    image = as_nifti(labels, series)
    moved = image.affine.copy()
    moved[:3, 3] += 0.5
    cases = {
        "moved.nii.gz": nib.Nifti1Image(labels, moved),
        "small.nii.gz": nib.Nifti1Image(labels[:, :, :3], image.affine),
        "half.nii.gz": nib.Nifti1Image(labels * 0.5, image.affine),
        "negative.nii.gz": nib.Nifti1Image(labels.astype(np.int16) - 1, image.affine),
        "4d.nii.gz": nib.Nifti1Image(np.stack([labels, labels], -1), image.affine),
    }
    problems = {
        "moved.nii.gz": "is not the grid of series",
        "small.nii.gz": "is not the grid of series",
        "half.nii.gz": "non-integer values",
        "negative.nii.gz": "values outside 0..65535",
        "4d.nii.gz": "has 4 dimensions",
    }
    for name, img in cases.items():
        nib.save(img, tmp_path / name)
        with pytest.raises(XnatMlError, match=problems[name]):
            read_labels(tmp_path / name, series)
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(XnatMlError, match="junk.nii.gz: cannot be read"):
        read_labels(tmp_path / "junk.nii.gz", series)
    with pytest.raises(XnatMlError, match="cannot be read"):
        read_labels(tmp_path / "missing.nii.gz", series)
