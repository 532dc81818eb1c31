"""Matching and validation on made-up records: every reason a session is out, the report."""

from __future__ import annotations

import time

import pytest
from records_factory import (
    DEFINITION,
    GRID,
    IDENTITY,
    LABELMAP_TEXT,
    FakeInspect,
    nifti,
    roi,
    scan,
    session,
)

from xnat_ml.datasets import NiftiInfo, Resource, Scan, build_dataset, parse_definition
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import parse_labelmap

LABELMAP = parse_labelmap(LABELMAP_TEXT, "ML_MODELS/region2MaskValueMap.txt")


def build(sessions, definition=None, inspect=None, **kw):
    d = parse_definition(definition or DEFINITION)
    return build_dataset(d, sessions, labelmap=LABELMAP, inspect=inspect or FakeInspect(), **kw)


def reasons(result, n: int) -> list[tuple[str, str]]:
    row = next(r for r in result.report["sessions"] if r["sessionId"] == f"XNAT_E{n:05d}")
    return [(r["code"], r["message"]) for r in row["reasons"]]


def test_clean_session_is_in_with_archive_uris() -> None:
    result = build([session(1)])
    assert result.outcomes[0].included
    (item,) = result.datalist["training"]  # one subject: the largest share takes it
    assert item == {
        "image": "/data/experiments/XNAT_E00001/scans/1/resources/NIFTI/files/t1.nii.gz",
        "label": "/data/experiments/XNAT_E00001/assessors/ROI1/resources/LABELMAP/files/"
        "labels.nii.gz",
        "subject": "SUB0001",
        "session": "SUB0001_MR1",
    }
    assert result.datalist["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    result.check(strict=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "T1_MPRAGE"), ("series_description", "T1 sag"), ("series_class", "T1-weighted")],
)
def test_series_description_matches_type_description_or_class(field: str, value: str) -> None:
    kw = {"type": "", "series_description": "", "series_class": "", field: value}
    s = Scan("1", uid="1.2.826.1.1", resources=(nifti(),), **kw)
    assert build([session(1, scans=(s,))]).outcomes[0].included


def test_keys_and_values_combine_as_and_or() -> None:
    doc = {
        "criteria": [
            {
                "payload": {
                    "image": {
                        "SeriesDescription": ["/^T2/", "T1%"],  # ORed
                        "ResourceLabel": ["NIFTI"],  # ANDed with the above
                        "ResourceFormat": ["NIFTI"],
                        "ResourceContent": ["%brain%", "T1_RAW"],
                    }
                }
            }
        ]
    }
    brain = Resource("NIFTI", format="NIFTI", content="T1 brain", files=nifti().files)
    raw = Resource("NIFTI", format="NIFTI", content="T1_RAW", files=nifti().files)
    other = Resource("NIFTI", format="NIFTI", content="other", files=nifti().files)
    sessions = [
        session(1, scans=(scan("1", "T1w", "", brain),)),
        session(2, scans=(scan("1", "T2w", "", raw),)),
        session(3, scans=(scan("1", "T1w", "", other),)),  # content fails
        session(4, scans=(scan("1", "PD", "", brain),)),  # series fails
    ]
    result = build(sessions, doc)
    assert [o.included for o in result.outcomes] == [True, True, False, False]
    assert reasons(result, 3) == [("no-match", "image: no file matches")]


def test_no_match_and_several_matches_name_the_tag_and_files() -> None:
    two = (scan("1", uid="1.1"), scan("2", uid="1.2"))
    sessions = [
        session(1, scans=(scan("1", "T2w"),), rois=()),
        session(2, scans=two, rois=(roi("A", "1.1"), roi("B", "1.1"))),
    ]
    result = build(sessions)
    assert reasons(result, 1) == [
        ("no-match", "image: no file matches"),
        ("no-match", "label: no file matches"),
    ]
    (img, lab) = reasons(result, 2)
    assert img == (
        "several-matches",
        "image: 2 files match: scan 1 (T1w) NIFTI/t1.nii.gz; scan 2 (T1w) NIFTI/t1.nii.gz",
    )
    assert (
        lab[0] == "several-matches"
        and "ROI collection A (A)" in lab[1]
        and "ROI collection B" in lab[1]
    )


def test_several_niftis_in_one_resource_need_a_file_name() -> None:
    s = session(1, scans=(scan("1", "T1w", "1.2.826.1.1", nifti("NIFTI", "a.nii.gz", "b.nii")),))
    assert reasons(build([s]), 1)[0][0] == "several-matches"
    doc = {
        **DEFINITION,
        "criteria": [
            {
                "payload": {
                    "image": {"SeriesDescription": "T1%", "FileName": "b.nii"},
                    "label": {"Source": "roiCollection", "CollectionType": "SEG"},
                }
            }
        ],
    }
    assert build([s], doc).outcomes[0].included


def test_collection_filters_pick_one_annotation() -> None:
    rois = (
        roi("A", "1.2.826.1.1", "RTSTRUCT", "liver by Ann"),
        roi("B", "1.2.826.1.1", "SEG", "Bob"),
    )
    doc = {
        **DEFINITION,
        "criteria": [
            {
                "payload": {
                    "image": {"SeriesDescription": "T1%"},
                    "label": {
                        "Source": "roiCollection",
                        "CollectionType": ["RTSTRUCT"],
                        "CollectionName": "/ann/i",
                    },
                }
            }
        ],
    }
    result = build([session(1, rois=rois)], doc)
    assert result.outcomes[0].files["label"].source.id == "A"


def test_label_drawn_on_another_scan_is_out() -> None:
    scans = (scan("1", "T1w", "1.1"), scan("2", "T2w", "1.2"))
    result = build(
        [session(1, scans=scans, rois=(roi("R", "1.2"),)), session(2, rois=(roi("R2", "9.9"),))]
    )
    assert reasons(result, 1) == [
        (
            "wrong-reference",
            "label: ROI collection R was drawn on scan 2, not on the image (scan 1)",
        )
    ]
    assert "drawn on series 9.9" in reasons(result, 2)[0][1]


def test_series_description_on_roi_collection_matches_its_scan() -> None:
    scans = (scan("1", "T1w", "1.1"), scan("2", "T2w", "1.2"))
    rois = (roi("A", "1.1"), roi("B", "1.2"))
    doc = {
        **DEFINITION,
        "criteria": [
            {
                "payload": {
                    "image": {"SeriesDescription": "T1%"},
                    "label": {"Source": "roiCollection", "SeriesDescription": "T1%"},
                }
            }
        ],
    }
    assert (
        build([session(1, scans=scans, rois=rois)], doc).outcomes[0].files["label"].source.id == "A"
    )


def test_unreadable_session_and_filters() -> None:
    doc = {**DEFINITION, "subjects": ["SUB000%"], "sessions": ["/MR[12]$/"]}
    sessions = [session(1), session(2, accessible=False), session(3), session(12)]
    result = build(sessions, doc)
    assert reasons(result, 2) == [("no-access", "the user may not read this session")]
    assert reasons(result, 3)[0][0] == "not-selected"
    assert reasons(result, 12)[0][0] == "not-selected"
    summary = result.report["summary"]
    assert (summary["included"], summary["excluded"], summary["notSelected"]) == (1, 1, 2)
    with pytest.raises(XnatMlError, match=r"1 session\(s\) excluded \(no-access 1\)"):
        result.check(strict=True)
    result.check(strict=False)


def test_grid_label_value_and_unreadable_checks() -> None:
    def label_uri(n: int) -> str:
        return f"/data/experiments/XNAT_E{n:05d}/assessors/ROI{n}/resources/LABELMAP/files/" + (
            "labels.nii.gz"
        )

    shifted = tuple(
        tuple(v + (0.5 if (i, j) == (0, 3) else 0) for j, v in enumerate(r))
        for i, r in enumerate(IDENTITY)
    )
    fake = FakeInspect(
        {
            label_uri(1): NiftiInfo((8, 8, 5), IDENTITY, frozenset({0, 1})),
            label_uri(2): NiftiInfo(GRID, shifted, frozenset({0, 1})),
            label_uri(3): NiftiInfo(GRID, IDENTITY, frozenset({0})),
            label_uri(4): NiftiInfo(GRID, IDENTITY, frozenset({0, 1, 7, 9})),
            label_uri(5): NiftiInfo(GRID, IDENTITY, frozenset({0, 2})),
        }
    )

    def inspect(ref, values):
        if ref.session.id == "XNAT_E00006" and not values:
            raise XnatMlError("NIfTI file t1.nii.gz: not a NIfTI-1 or NIfTI-2 image")
        return fake(ref, values)

    doc = {**DEFINITION, "requiredLabels": ["liver"]}
    result = build([session(n) for n in range(1, 8)], doc, inspect)
    assert reasons(result, 1) == [
        ("grid-mismatch", "label grid differs from image: shape [8, 8, 5] vs [8, 8, 4]")
    ]
    assert reasons(result, 2) == [
        ("grid-mismatch", "label grid differs from image: affine differs by up to 0.5 mm")
    ]
    assert reasons(result, 3) == [("empty-label", "label: every voxel is 0 (nothing drawn)")]
    assert reasons(result, 4) == [
        ("labels-outside-map", "label: values 7, 9 are not in ML_MODELS/region2MaskValueMap.txt")
    ]
    assert reasons(result, 5) == [("missing-required", "label: lacks required labels liver (1)")]
    assert reasons(result, 6) == [
        ("unreadable", "image: NIfTI file t1.nii.gz: not a NIfTI-1 or NIfTI-2 image")
    ]
    assert reasons(result, 7) == []
    # images are inspected for their header only; label files for their values
    assert {v for uri, v in fake.calls if "/scans/" in uri} == {False}
    assert {v for uri, v in fake.calls if "/assessors/" in uri} == {True}


def test_channels_in_declared_order_and_grids_compared() -> None:
    doc = {
        "criteria": [
            {
                "payload": {
                    "t1": {"SeriesDescription": "T1w"},
                    "flair": {"SeriesDescription": "FLAIR"},
                    "label": {"Source": "roiCollection"},
                }
            }
        ],
        "channels": ["flair", "t1"],
    }
    scans = (scan("1", "T1w", "1.1"), scan("2", "FLAIR", "1.2"))
    flair = "/data/experiments/XNAT_E00002/scans/2/resources/NIFTI/files/t1.nii.gz"
    fake = FakeInspect({flair: NiftiInfo((9, 9, 9), IDENTITY)})
    result = build(
        [
            session(1, scans=scans, rois=(roi("R1", "1.1"),)),
            session(2, scans=scans, rois=(roi("R2", "1.2"),)),
        ],
        doc,
        fake,
    )
    (item,) = result.datalist["training"]
    assert [u.split("/scans/")[1][0] for u in item["image"]] == ["2", "1"]
    assert (
        reasons(result, 2)[0][0] == "grid-mismatch"
        and "t1 grid differs from flair" in reasons(result, 2)[0][1]
    )


def test_required_labels_must_be_in_the_label_map() -> None:
    with pytest.raises(XnatMlError, match="requiredLabels 'kidney': names 0 labels"):
        build([session(1)], {**DEFINITION, "requiredLabels": ["kidney"]})
    with pytest.raises(XnatMlError, match="requiredLabels 7: no label has that value"):
        build([session(1)], {**DEFINITION, "requiredLabels": [7]})


def test_label_map_is_needed_for_a_label_tag_and_no_session_is_an_error() -> None:
    d = parse_definition(DEFINITION)
    with pytest.raises(
        XnatMlError, match="label map ML_MODELS/region2MaskValueMap.txt was not given"
    ):
        build_dataset(d, [session(1)])
    with pytest.raises(XnatMlError, match="dataset dataset: no session qualifies"):
        build([session(1, rois=())]).check()


def test_without_inspect_files_go_unchecked() -> None:
    d = parse_definition(DEFINITION)
    result = build_dataset(d, [session(1)], labelmap=LABELMAP)
    assert result.outcomes[0].included
    assert result.report["checks"] == {"grids": False, "labelValues": False}
    assert "grids and label values are unchecked" in result.report_markdown()


def test_report_markdown_table() -> None:
    sessions = [session(1), session(2, rois=()), session(3, subject="A|B")]
    text = build(sessions).report_markdown()
    lines = text.splitlines()
    assert lines[0] == "# Dataset dataset: validation report"
    assert "3 sessions: 2 in (2 subjects; training 2), 1 out, 0 not selected" in text
    assert "Out because: no-match 1." in text
    header = lines.index("| Session | Subject | In | Split | Why |")
    rows = lines[header + 2 :]
    assert rows == [
        r"| A\|B_MR3 | A\|B | yes | training |  |",
        "| SUB0001_MR1 | SUB0001 | yes | training |  |",
        "| SUB0002_MR2 | SUB0002 | no |  | no-match: label: no file matches |",
    ]


def test_five_thousand_sessions_in_well_under_a_second() -> None:
    sessions = [
        session(
            n,
            scans=(scan("1", "T1w", f"1.{n}.1"), scan("2", "T2w", f"1.{n}.2")),
            rois=(roi(f"R{n}", f"1.{n}.1"), roi(f"Q{n}", f"1.{n}.2", "RTSTRUCT")),
        )
        for n in range(5000)
    ]
    doc = {
        **DEFINITION,
        "criteria": [
            {
                "payload": {
                    "image": {"SeriesDescription": ["/^t1/i"], "ResourceLabel": "NIFTI"},
                    "label": {"Source": "roiCollection", "CollectionType": "SEG"},
                }
            }
        ],
    }
    d = parse_definition(doc)
    timings = []
    for _ in range(3):  # best of three: the test machine is shared
        start = time.perf_counter()
        result = build_dataset(d, sessions, labelmap=LABELMAP, inspect=FakeInspect())
        timings.append(time.perf_counter() - start)
    assert result.report["summary"]["included"] == 5000
    assert min(timings) < 1.0, f"{min(timings):.2f} s for 5000 sessions"
