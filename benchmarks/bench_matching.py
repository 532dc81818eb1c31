"""Matching a hostile dataset definition against a plain one (issue 15, finding 6).

    .venv/bin/python benchmarks/bench_matching.py [--sessions 1000]

Builds SESSIONS made-up sessions (four scans each, every value 256 characters and distinct, so
no kept answer helps) twice: with a plain definition (``T1%``, ``NIFTI``) and with one written
to backtrack (``%a%a%a%a%a%b``, ``/a*a*a*a*a*b/``, ``/^(a+)+b$/``, ``/^(a|aa)+b$/i`` on every
key). Prints both times and their ratio (target <= 5: RE2's matching is linear in the value, so
the hostile one costs a small factor more, never minutes; measured 3.0 on the shared 2-core
machine, 0.26 s for 1,000 sessions). For reference it also times Python's backtracking ``re`` on
``^(a+)+b$`` against a value of N ``a``s for small N: each two more characters about
quadruple its time, where 256 characters would take longer than the universe has existed.
Exit 1 when the ratio misses its target.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from xnat_ml.datasets import build_dataset, parse_definition
from xnat_ml.datasets.records import FileEntry, Resource, Scan, Session

TARGET_RATIO = 5.0
HOSTILE = ["%a%a%a%a%a%b", "/a*a*a*a*a*b/", "/^(a+)+b$/", "/^(a|aa)+b$/i"]
KEYS = ("SeriesDescription", "ResourceLabel", "ResourceFormat", "ResourceContent")


def sessions(count: int) -> list[Session]:
    """Every tenth session has one scan that both definitions select; no value repeats."""
    out = []
    for n in range(count):
        scans = []
        for i in range(4):
            chosen = n % 10 == 0 and i == 0
            # distinct values (no answer is reused), none of them with a "b" unless chosen
            value = ("T1" + "a" * 253 + "b") if chosen else "a" * 250 + f"{n:05d}{i}"
            label = "NIFTI" if chosen else value
            scans.append(Scan(str(i), type=value, series_description=value, series_class=value,
                              uid=f"1.2.{n}.{i}",
                              resources=(Resource(label, format=value, content=value,
                                                  files=(FileEntry("t1.nii.gz"),)),)))  # fmt: skip
        subject = f"S{n:05d}"
        out.append(Session("P", subject, subject, f"E{n}", f"{subject}_MR", scans=tuple(scans)))
    return out


def timed(definition: dict, data: list[Session]) -> tuple[float, int]:
    parsed = parse_definition(definition)
    best, included = float("inf"), 0
    for _ in range(3):  # best of three: the machine is shared
        start = time.perf_counter()
        built = build_dataset(parsed, data)
        best = min(best, time.perf_counter() - start)
        included = sum(o.included for o in built.outcomes)
    return best, included


def backtracking_reference(lengths: range) -> list[tuple[int, float]]:
    pattern = re.compile(r"^(a+)+b$")
    out = []
    for n in lengths:
        start = time.perf_counter()
        pattern.search("a" * n)
        out.append((n, time.perf_counter() - start))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    data = sessions(args.sessions)
    plain = {"criteria": [{"payload": {"Images": {
        "tag": "image", "SeriesDescription": ["T1%"], "ResourceLabel": ["NIFTI"]}}}]}
    images = {"tag": "image", **{key: HOSTILE for key in KEYS}}
    images["ResourceLabel"] = HOSTILE + ["NIFTI"]
    hostile = {"criteria": [{"payload": {"Images": images}}]}
    plain_s, plain_n = timed(plain, data)
    hostile_s, hostile_n = timed(hostile, data)
    ratio = hostile_s / plain_s
    print(f"{args.sessions} sessions, 4 scans each, 256-character values")
    print(f"plain definition:   {plain_s:.3f} s ({plain_n} included)")
    print(f"hostile definition: {hostile_s:.3f} s ({hostile_n} included)")
    print(f"ratio hostile / plain: {ratio:.2f} (target <= {TARGET_RATIO})")
    print("Python re, ^(a+)+b$ on N a's (backtracking, for reference):")
    for n, seconds in backtracking_reference(range(16, 25, 2)):
        print(f"  N={n}: {seconds:.4f} s")
    if plain_n != hostile_n:
        print("the two definitions disagree on what they select")
        return 1
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
