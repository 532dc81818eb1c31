"""What a dataset version changed against the one before: in, out, moved; folds by number."""

from __future__ import annotations

from xnat_ml.datasets.changes import Change, changes_markdown, version_changes


def _item(subject: str, session: str, **extra) -> dict:
    return {"subject": subject, "session": session, "image": "i", "label": "l", **extra}


def test_sessions_in_out_and_moved():
    before = {"training": [_item("S1", "A"), _item("S2", "B")], "testing": [_item("S3", "C")]}
    after = {"training": [_item("S1", "A")], "validation": [_item("S3", "C")],
             "testing": [_item("S4", "D")]}  # fmt: skip
    assert version_changes(before, after) == [
        Change("S2", "B", "training", None),
        Change("S3", "C", "testing", "validation"),
        Change("S4", "D", None, "testing"),
    ]
    text = changes_markdown(version_changes(before, after), 1)
    assert text.startswith("## Changes since v1\n\n1 session(s) in, 1 out, 1 moved")
    assert "| B | S2 | training | out |" in text and "| D | S4 | not in | testing |" in text


def test_folds_count_as_places_and_nothing_changed_says_so():
    before = {"training": [_item("S1", "A", fold=0), _item("S2", "B", fold=1)]}
    after = {"training": [_item("S1", "A", fold=1), _item("S2", "B", fold=1)]}
    assert version_changes(before, after) == [Change("S1", "A", "fold0", "fold1")]
    assert version_changes(after, after) == []
    assert "The same sessions in the same splits." in changes_markdown([], 3)


def test_odd_datalists_are_read_as_far_as_they_go():
    odd = {"training": [7, None, _item("S1", "A")], "testing": None, "validation": "x"}
    assert version_changes({}, odd) == [Change("S1", "A", None, "training")]
