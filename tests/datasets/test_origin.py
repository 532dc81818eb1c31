"""AI and human ROI collections apart, on made-up records: ``Origin`` takes only collections of
the given origins (a session left with none is ``other-origin``, naming what was left out);
``Prefer`` takes, of the collections drawn on one scan, those of the preferred origin."""

from __future__ import annotations

import copy

import pytest
from records_factory import DEFINITION, LABELMAP_TEXT, FakeInspect, roi, scan, session

from xnat_ml.datasets import DefinitionError, build_dataset, parse_definition
from xnat_ml.imaging.labelmap import parse_labelmap

LABELMAP = parse_labelmap(LABELMAP_TEXT, "ML_MODELS/region2MaskValueMap.txt")
T1, T2 = "1.2.826.7.1", "1.2.826.7.2"
SCANS = (scan("1", "T1w", T1), scan("2", "T2w", T2))


def definition(**label) -> dict:
    doc = copy.deepcopy(DEFINITION)
    doc["criteria"][0]["payload"]["Labels"].update(label)
    return doc


def build(sessions, **label):
    parsed = parse_definition(definition(**label), "origin.json")
    return build_dataset(parsed, sessions, labelmap=LABELMAP, inspect=FakeInspect())


def chosen(result, n: int) -> str | None:
    """The id of the ROI collection session n's label comes from (None: the session is out)."""
    outcome = next(o for o in result.outcomes if o.session.id == f"XNAT_E{n:05d}")
    return outcome.files["label"].source.id if outcome.included else None


def codes(result, n: int) -> list[tuple[str, str]]:
    row = next(r for r in result.report["sessions"] if r["sessionId"] == f"XNAT_E{n:05d}")
    return [(r["code"], r["message"]) for r in row["reasons"]]


HUMAN_SEG = roi("HUMAN", T1, origin="human")
AI_SEG = roi("AI", T1, name="AI_brain_v1_S1", origin="ai")
MIXED_SEG = roi("MIXED", T1, origin="mixed")
OLD_RTSTRUCT = roi("RTS", T1, kind="RTSTRUCT")  # no record of its origin: an RTSTRUCT is human
OLD_SEG = roi("OLDSEG", T1)  # no record, a SEG: unknown


def test_only_human_collections() -> None:
    sessions = [
        session(1, scans=SCANS, rois=(HUMAN_SEG, AI_SEG)),
        session(2, scans=SCANS, rois=(OLD_RTSTRUCT, AI_SEG)),
        session(3, scans=SCANS, rois=(AI_SEG,)),
        session(4, scans=SCANS, rois=(MIXED_SEG,)),
        session(5, scans=SCANS, rois=(OLD_SEG,)),
    ]
    result = build(sessions, Origin="human")
    assert [chosen(result, n) for n in range(1, 6)] == ["HUMAN", "RTS", None, None, None]
    assert codes(result, 3) == [("other-origin", "label: no human ROI collection: ROI collection "
                                 "AI (AI_brain_v1_S1) LABELMAP/labels.nii.gz is ai")]  # fmt: skip
    assert codes(result, 4)[0][0] == codes(result, 5)[0][0] == "other-origin"
    assert "is unknown" in codes(result, 5)[0][1]
    assert result.report["summary"]["excludedBy"] == {"other-origin": 3}


def test_without_origin_both_match_and_several_is_reported() -> None:
    result = build([session(1, scans=SCANS, rois=(HUMAN_SEG, AI_SEG))])
    assert codes(result, 1)[0][0] == "several-matches"


def test_prefer_human_on_the_same_scan() -> None:
    sessions = [
        session(1, scans=SCANS, rois=(AI_SEG, HUMAN_SEG)),
        session(2, scans=SCANS, rois=(AI_SEG,)),  # nothing better: the AI one
        session(3, scans=SCANS, rois=(AI_SEG, MIXED_SEG, OLD_RTSTRUCT)),
        session(4, scans=SCANS, rois=(AI_SEG, HUMAN_SEG, OLD_RTSTRUCT)),  # two human: today's rule
        session(5, scans=SCANS, rois=(AI_SEG, roi("T2HUMAN", T2, origin="human"))),
    ]
    result = build(sessions, Prefer="human")
    assert [chosen(result, n) for n in range(1, 5)] == ["HUMAN", "AI", "RTS", None]
    assert codes(result, 4)[0][0] == "several-matches"
    assert "RTS" in codes(result, 4)[0][1] and "AI_brain" not in codes(result, 4)[0][1]
    # preference is per scan: a human collection of the T2w does not push out the T1w's AI one
    assert codes(result, 5)[0][0] == "several-matches"
    assert [chosen(build(sessions, Prefer="ai"), n) for n in (1, 2, 3)] == ["AI", "AI", "AI"]


def test_mixed_collections() -> None:
    sessions = [
        session(1, scans=SCANS, rois=(MIXED_SEG,)),
        session(2, scans=SCANS, rois=(MIXED_SEG, AI_SEG)),
        session(3, scans=SCANS, rois=(MIXED_SEG, HUMAN_SEG)),
    ]
    both = build(sessions, Origin=["human", "mixed"], Prefer="human")
    assert [chosen(both, n) for n in (1, 2, 3)] == ["MIXED", "MIXED", "HUMAN"]
    assert [chosen(build(sessions, Origin="mixed"), n) for n in (1, 2, 3)] == [
        "MIXED", "MIXED", "MIXED",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ({"Origin": "robot"}, "Labels.Origin: 'robot' is not one of human, ai, mixed"),
        ({"Origin": ["human", "unknown"]}, "Labels.Origin: 'unknown' is not one of human, ai"),
        ({"Origin": []}, "Labels.Origin: expected one of human, ai, mixed or a list of them"),
        ({"Origin": {"human": 1}}, "Labels.Origin: expected one of human, ai, mixed or a list"),
        ({"Prefer": "mixed"}, "Labels.Prefer: 'mixed' is not one of human, ai"),
        ({"Prefer": ["human"]}, r"Labels.Prefer: \['human'\] is not one of human, ai"),
        ({"Source": "scan", "Origin": "human"}, "Labels.Origin: only applies with Source roiC"),
    ],
)
def test_bad_origin_keys_are_one_line(label: dict, message: str) -> None:
    with pytest.raises(DefinitionError, match=message) as caught:
        parse_definition(definition(**label), "origin.json")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("dataset definition origin.json: criteria[0].payload.")
