"""Definition values: literal, SQL LIKE (% and %%), /regex/ and /regex/i, and hostile ones."""

from __future__ import annotations

import time

import pytest

from xnat_ml.datasets.patterns import MAX_PATTERN_CHARS, PatternError, compile_pattern


def matches(pattern: str, value: str) -> bool:
    return compile_pattern(pattern, "test").matches(value)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("T1w", "T1w", True),
        ("T1w", "t1w", False),  # literals are exact, case included
        ("T1w", "T1w_MPRAGE", False),
        ("T1%", "T1w_MPRAGE", True),
        ("T1%", "xT1", False),  # LIKE matches the whole value
        ("%MPRAGE%", "T1 MPRAGE sag", True),
        ("T_w%", "T1w", True),  # LIKE's _ is one character
        ("T_w%", "T12w", False),
        ("T_w", "T1w", False),  # no %: a literal, _ included
        ("50%%", "50%", True),  # %% alone: a literal percent, compared exactly
        ("50%%", "500", False),
        ("50%%%", "50% off", True),  # literal percent then LIKE's %
        ("50%%%", "50 off", False),
        ("a.c%", "abc", False),  # LIKE escapes regex metacharacters
        ("/^T1/", "T1w", True),
        ("/MPRAGE/", "T1 MPRAGE", True),  # regexes search, as PostgreSQL's ~ does
        ("/mprage/", "T1 MPRAGE", False),
        ("/mprage/i", "T1 MPRAGE", True),
        ("/T2[[:space:]]+FLAIR/", "T2  FLAIR", True),  # POSIX classes the plugin's docs use
        ("/", "/", True),
    ],
)
def test_value_forms(pattern: str, value: str, expected: bool) -> None:
    assert matches(pattern, value) is expected


def test_missing_value_never_matches() -> None:
    assert not compile_pattern("%", "test").matches(None)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("/[/", "bad regex '/[/'"),
        ("//", "empty regex"),
        ("/a{2000}/", "bad regex '/a{2000}/': invalid repetition size"),  # RE2's limit: 1000
        ("/x{1,2}{3}/", "bad regex"),
        ("/(a)\\1/", "not supported"),  # backreferences: tests/datasets/test_hostile_matching.py
        ("/" + "a" * MAX_PATTERN_CHARS + "/", "longer than"),
    ],
)
def test_hostile_patterns_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(PatternError, match=r"^where\[1\]: ") as info:
        compile_pattern(pattern, "where[1]")
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_long_values_are_cut() -> None:
    pattern = compile_pattern("/a.*a.*b/", "test")
    start = time.perf_counter()
    assert not pattern.matches("a" * 100_000)  # compared on the first 256 characters only
    assert time.perf_counter() - start < 1.0
