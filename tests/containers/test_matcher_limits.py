"""Matchers and payload filters are user text evaluated on every launch and event: their regexes
match in linear time (RE2), their nesting is capped before Python's recursion limit, and long
`&&` / `||` chains evaluate without one stack frame per operator."""

from __future__ import annotations

import time

import pytest

from xnat_ml.containers.matcher import (
    MAX_MATCHER_DEPTH,
    MAX_MATCHER_LENGTH,
    MatcherError,
    compile_matcher,
    matches,
)
from xnat_ml.events.filters import FilterError, compile_predicate

LONG = {"label": "a" * 256, "type": "a" * 255 + "b"}


@pytest.mark.parametrize("regex", ["/a*a*a*a*a*c/", "/(a+)+c/", "/(a|aa)*c/i"])
def test_backtracking_regexes_match_in_linear_time(regex: str) -> None:
    start = time.perf_counter()
    for _ in range(100):
        assert not matches(f"@.label =~ {regex}", LONG)
    assert matches(f"@.type =~ {regex.replace('c/', 'b/')}", LONG)
    assert time.perf_counter() - start < 5.0  # microseconds each; minutes with backtracking


def test_regex_syntax_that_needs_backtracking_is_refused() -> None:
    with pytest.raises(MatcherError, match="not supported"):
        compile_matcher("@.label =~ /(a)\\1/")
    with pytest.raises(FilterError, match="not a JSONPath predicate.*not supported"):
        compile_predicate("@.label =~ /a(?=b)/")


@pytest.mark.parametrize("opener", ["(", "!", "["])
def test_nesting_past_the_cap_is_one_line(opener: str) -> None:
    closer = {"(": ")", "!": "", "[": "]"}[opener]
    ok = opener * MAX_MATCHER_DEPTH + "1" + closer * MAX_MATCHER_DEPTH
    compile_matcher(ok)
    deep = opener * 2000 + "1" + closer * 2000
    assert len(deep) <= MAX_MATCHER_LENGTH
    with pytest.raises(MatcherError, match=f"nested deeper than {MAX_MATCHER_DEPTH} levels"):
        compile_matcher(deep)


def test_long_chains_evaluate_without_deep_recursion() -> None:
    chain = "&&".join(["1"] * 1300)  # was 1300 nested closures: a RecursionError
    assert len(chain) <= MAX_MATCHER_LENGTH
    assert matches(chain, LONG)
    assert not matches(chain + "&&@.missing", LONG)
    assert matches("||".join(["null"] * 600 + ["@.label"]), LONG)
