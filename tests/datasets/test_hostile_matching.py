"""A definition written to make matching backtrack (issue 15, finding 6): LIKE patterns of many
`%`, regexes of repeated or nested repeats, on 256-character values in many sessions. With
backtracking matchers one value took minutes; the whole build must stay well under a second
(the bound asserted is far above that, so it cannot flake) and still match correctly.
benchmarks/bench_matching.py measures the ratio against a plain definition."""

from __future__ import annotations

import time

import pytest

from xnat_ml.datasets import build_dataset, parse_definition
from xnat_ml.datasets.patterns import PatternError, compile_pattern
from xnat_ml.datasets.records import FileEntry, Resource, Scan, Session

HOSTILE = ["%a%a%a%a%a%b", "/a*a*a*a*a*b/", "/^(a+)+b$/", "/^(a|aa)+b$/i", "/(x*y?)*z/"]
LONG = "a" * 256  # matches none of them, after the longest possible search
WANTED = "a" * 255 + "b"  # matches all but the last


def _scan(i: int, value: str, n: int) -> Scan:
    return Scan(
        str(i),
        type=value,
        series_description=value,
        series_class=value,
        uid=f"1.2.{n}.{i}",
        resources=(Resource(value, format=value, content=value,
                            files=(FileEntry(value + ".nii.gz"),)),),  # fmt: skip
    )


def _session(n: int, wanted: bool) -> Session:
    """Four scans of 256-character values; in a wanted session the first one matches."""
    scans = tuple(_scan(i, WANTED if wanted and i == 0 else LONG, n) for i in range(4))
    subject = ("a" * 200) + (f"b{n}" if wanted else f"c{n}")
    return Session("P1", f"S{n}", subject, f"E{n}", subject + "_MR", scans=scans)


def _definition() -> dict:
    return {
        "criteria": [{"payload": {"Images": {
            "tag": "image",
            "SeriesDescription": HOSTILE,
            "ResourceLabel": HOSTILE,
            "ResourceFormat": HOSTILE,
            "ResourceContent": HOSTILE,
            "FileName": [p.replace("b$/", "b\\.nii\\.gz$/").replace("%b", "%b.nii.gz")
                         for p in HOSTILE],  # fmt: skip
        }}}],
        "subjects": ["%a%a%a%a%a%a%a%b%"],
        "sessions": ["/^(a|a)*a*a*a*b/"],
    }


def test_hostile_definition_matches_correctly_and_fast() -> None:
    sessions = [_session(n, wanted=n % 10 == 0) for n in range(200)]
    definition = parse_definition(_definition())
    start = time.perf_counter()
    built = build_dataset(definition, sessions)
    elapsed = time.perf_counter() - start
    included = sorted(o.session.id for o in built.outcomes if o.included)
    assert included == sorted(f"E{n}" for n in range(0, 200, 10))
    assert elapsed < 5.0, f"matching took {elapsed:.1f} s"  # ~0.1 s; minutes when backtracking


@pytest.mark.parametrize("pattern", HOSTILE)
def test_each_backtracking_shape_is_linear(pattern: str) -> None:
    compiled = compile_pattern(pattern, "test")
    start = time.perf_counter()
    for _ in range(100):
        assert not compiled.matches(LONG)
    assert compiled.matches(WANTED) is (pattern != "/(x*y?)*z/")
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    "pattern", ["/(a)\\1/", "/a(?=b)/", "/(?<!a)b/", "/a++b/", "/(?>a+)b/", "/(?P<x>a)(?P=x)/"]
)
def test_syntax_that_needs_backtracking_is_refused_in_one_line(pattern: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern, "criteria[0].payload.Images.SeriesDescription[2]")
    message = str(info.value)
    assert message.startswith(
        f"criteria[0].payload.Images.SeriesDescription[2]: bad regex {pattern!r}: "
    )
    assert "not supported (matching must take linear time)" in message
    assert "\n" not in message
