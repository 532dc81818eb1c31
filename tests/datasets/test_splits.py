"""Subject splits: no subject in two splits, seeded, stable when subjects are added, ratios
within one subject of the target; folds the same way."""

from __future__ import annotations

import random

import pytest
from records_factory import DEFINITION, LABELMAP_TEXT, FakeInspect, session

from xnat_ml.datasets import assign_splits, build_dataset, parse_definition, previous_assignment
from xnat_ml.datasets.definition import parse_split
from xnat_ml.imaging.labelmap import parse_labelmap


def spec(**kw):
    return parse_split(kw, "split")


def within_one(placed: dict[str, str], s) -> bool:
    n = len(placed)
    counts = {name: 0 for name, _ in s.shares}
    for split in placed.values():
        counts[split] += 1
    return all(abs(counts[name] - share * n) <= 1 for name, share in s.shares)


def test_ratios_within_one_subject_for_many_seeds_and_sizes() -> None:
    rng = random.Random(1)
    for seed in range(20):
        s = spec(training=70, validation=20, testing=10, seed=rng.randrange(2**63))
        for n in range(5, 201):
            subjects = [f"S{rng.randrange(10**9)}" for _ in range(n)]
            assert within_one(assign_splits(subjects, s), s), (seed, n)


def test_adding_subjects_never_moves_one_and_keeps_ratios() -> None:
    rng = random.Random(2)
    for seed in range(30):
        s = spec(training=60, validation=25, testing=15, seed=seed)
        n = rng.randrange(5, 150)
        first = [f"sub-{rng.randrange(10**9)}" for _ in range(n)]
        placed = assign_splits(first, s)
        more = first + [f"new-{rng.randrange(10**9)}" for _ in range(max(1, n * 3 // 10))]
        again = assign_splits(more, s, previous=placed)
        assert {k: again[k] for k in first} == placed
        assert within_one(again, s)


def test_same_seed_same_result_other_seed_other_result_order_irrelevant() -> None:
    subjects = [f"S{i}" for i in range(50)]
    s = spec(training=70, validation=20, testing=10, seed=3)
    assert assign_splits(subjects, s) == assign_splits(list(reversed(subjects)), s)
    assert assign_splits(subjects, s) != assign_splits(
        subjects, spec(training=70, validation=20, testing=10, seed=4)
    )


@pytest.mark.parametrize("folds", [2, 5, 10])
def test_folds_balanced_and_stable(folds: int) -> None:
    for seed in range(10):
        s = spec(folds=folds, testing=10, seed=seed)
        subjects = [f"S{seed}-{i}" for i in range(7, 7 + 20 * folds)]
        placed = assign_splits(subjects, s)
        assert within_one(placed, s)
        grown = assign_splits(subjects + [f"N{i}" for i in range(6 * folds)], s, previous=placed)
        assert {k: grown[k] for k in subjects} == placed and within_one(grown, s)


def test_sessions_of_a_subject_share_a_split_and_a_rebuild_keeps_everything() -> None:
    labelmap = parse_labelmap(LABELMAP_TEXT)
    d = parse_definition(DEFINITION)
    sessions = [session(n, subject=f"SUB{n % 40:03d}") for n in range(120)]
    first = build_dataset(d, sessions, labelmap=labelmap, inspect=FakeInspect())
    where: dict[str, set[str]] = {}
    for key in ("training", "validation", "testing"):
        for item in first.datalist[key]:
            where.setdefault(item["subject"], set()).add(key)
    assert len(where) == 40 and all(len(v) == 1 for v in where.values())
    assert (
        first.datalist["numTraining"],
        first.datalist["numValidation"],
        first.datalist["numTesting"],
    ) == (84, 24, 12)
    # later: 30% more subjects and a new session of an old subject
    grown = (
        sessions
        + [session(n, subject=f"NEW{n}") for n in range(200, 212)]
        + [session(300, subject="SUB001")]
    )
    second = build_dataset(
        d,
        grown,
        labelmap=labelmap,
        inspect=FakeInspect(),
        previous=previous_assignment(first.datalist),
    )
    for key in ("training", "validation", "testing"):
        old = {(i["subject"], i["session"]) for i in first.datalist[key]}
        new = {(i["subject"], i["session"]) for i in second.datalist[key]}
        assert old <= new
    assert "SUB001_MR300" in {i["session"] for i in second.datalist[next(iter(where["SUB001"]))]}
    rebuilt = build_dataset(
        d,
        sessions,
        labelmap=labelmap,
        inspect=FakeInspect(),
        previous=previous_assignment(first.datalist),
    )
    assert rebuilt.datalist == first.datalist


def test_fold_items_carry_their_fold() -> None:
    d = parse_definition({**DEFINITION, "split": {"folds": 3, "seed": 1}})
    result = build_dataset(
        d, [session(n) for n in range(9)], labelmap=parse_labelmap(LABELMAP_TEXT)
    )
    folds = sorted(item["fold"] for item in result.datalist["training"])
    assert folds == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert result.datalist["numValidation"] == result.datalist["numTesting"] == 0
    assert previous_assignment(result.datalist)["SUB0000"].startswith("fold")
    assert "(fold " in result.report_markdown()
