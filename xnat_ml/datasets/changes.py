"""What a dataset version changed against the one before it: the sessions that came in, went
out, or moved to another split. A project owner reads this before training on a new version, and
it is worked out from the two stored datalists whenever it is shown (nothing more is stored, so
an unchanged rebuild still writes no version)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xnat_ml.datasets.datalist import LISTS


@dataclass(frozen=True)
class Change:
    subject: str
    session: str
    before: str | None  # its split in the earlier version; None when it came in
    after: str | None  # its split in this version; None when it went out


def placements(doc: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """``(subject, session) -> split`` of a datalist (``fold<i>`` for cross-validation items)."""
    out: dict[tuple[str, str], str] = {}
    for key in LISTS:
        for item in doc.get(key) or []:
            if isinstance(item, dict):
                fold = item.get("fold")
                where = f"fold{fold}" if isinstance(fold, int) else key
                out[(str(item.get("subject", "")), str(item.get("session", "")))] = where
    return out


def version_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Sessions in only one of the two datalists, or in both but in other splits; sorted."""
    old, new = placements(before), placements(after)
    return [
        Change(subject, session, old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        for subject, session in [key]
        if old.get(key) != new.get(key)
    ]


def changes_markdown(changes: list[Change], since: int) -> str:
    """A section for report.md's readers: ``## Changes since v<N>`` and a table."""
    if not changes:
        return f"## Changes since v{since}\n\nThe same sessions in the same splits.\n"
    rows = [f"| {c.session} | {c.subject} | {c.before or 'not in'} | {c.after or 'out'} |"
            for c in changes]  # fmt: skip
    came = sum(c.before is None for c in changes)
    went = sum(c.after is None for c in changes)
    moved = len(changes) - came - went
    return "\n".join([
        f"## Changes since v{since}", "",
        f"{came} session(s) in, {went} out, {moved} moved to another split.", "",
        "| Session | Subject | Was | Now |", "|---|---|---|---|", *rows,
    ]) + "\n"  # fmt: skip
