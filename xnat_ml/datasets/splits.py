"""Subject-level splits that hold their ratios and never move a subject once placed.

No rule that looks at one subject alone can keep ratios within one subject of the target for
every set of subjects (its errors grow like a coin's), so placement looks at the whole set and
at the previous version's placement:

- subjects placed before keep their split (pass ``previous``);
- new subjects are taken in the order of ``sha256(seed, subject)`` and each goes to the split
  furthest below its target share of the subjects placed so far, ties to the earlier split.

That greedy step keeps every split's count within one subject of ``share * subjects`` after each
placement (the deficits sum to zero and none can pass one), so it holds for a first build and for
every later build that only adds subjects. Without ``previous`` the result is a function of the
seed and the set of subjects. Folds are the same rule with equal shares.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

from xnat_ml.datasets.definition import SplitSpec


def subject_rank(seed: int, subject: str) -> bytes:
    """The subject's place in line for a seed: stable across runs, machines and versions."""
    return hashlib.sha256(f"{seed}\0{subject}".encode()).digest()


def assign_splits(
    subjects: Iterable[str], spec: SplitSpec, previous: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{subject: split name}`` for every subject; names are those of ``spec.shares``."""
    names = [name for name, _ in spec.shares]
    # Integer weights over a common denominator: exact comparisons, no float ties.
    denominator = math.lcm(*(share.denominator for _, share in spec.shares))
    weights = [share.numerator * (denominator // share.denominator) for _, share in spec.shares]
    total = sum(weights)  # == denominator
    counts = dict.fromkeys(names, 0)
    placed: dict[str, str] = {}
    wanted = set(subjects)
    for subject, split in (previous or {}).items():
        if subject in wanted and split in counts:
            placed[subject] = split
            counts[split] += 1
    order = sorted(wanted - placed.keys(), key=lambda s: (subject_rank(spec.seed, s), s))
    for subject in order:
        n = len(placed) + 1
        best = max(
            range(len(names)),
            key=lambda i: (weights[i] * n - counts[names[i]] * total, -i),
        )
        placed[subject] = names[best]
        counts[names[best]] += 1
    return placed
