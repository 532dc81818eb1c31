"""The validation report: ``report.json`` (every session, in or out and why) and ``report.md``
(the same as a table a person reads). The Markdown is rendered from the JSON alone, so a stored
report can be shown again without rebuilding."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from xnat_ml.datasets.reasons import NOT_SELECTED

if TYPE_CHECKING:
    from xnat_ml.datasets.build import Outcome
    from xnat_ml.datasets.definition import Definition
    from xnat_ml.imaging.labelmap import LabelMap

REPORT_FORMAT = "xnat-ml-dataset-report"


def report_json(
    *,
    name: str,
    definition: Definition,
    labelmap: LabelMap | None,
    checked: bool,
    outcomes: list[Outcome],
) -> dict[str, Any]:
    rows = [_row(o) for o in outcomes]
    selected = [o for o in outcomes if not _only_unselected(o)]
    excluded = [o for o in selected if not o.included]
    per_split = Counter(r["split"] for r in rows if r["included"])
    return {
        "format": REPORT_FORMAT,
        "version": 1,
        "name": name,
        "definition": {"id": definition.id, "project": definition.project},
        "labelmap": labelmap.source if labelmap else None,
        "split": definition.split.as_json(),
        "checks": {"grids": checked, "labelValues": checked and definition.label is not None},
        "summary": {
            "sessions": len(outcomes),
            "notSelected": len(outcomes) - len(selected),
            "included": len(selected) - len(excluded),
            "excluded": len(excluded),
            "excludedBy": dict(Counter(r.code for o in excluded for r in o.reasons)),
            "subjects": len({o.session.subject_label for o in selected if o.included}),
            "perSplit": dict(per_split),
        },
        "sessions": rows,
    }


def report_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    splits = ", ".join(f"{k} {v}" for k, v in sorted(s["perSplit"].items())) or "none"
    lines = [
        f"# Dataset {_cell(report['name'])}: validation report",
        "",
        f"{s['sessions']} sessions: {s['included']} in ({s['subjects']} subjects; {splits}), "
        f"{s['excluded']} out, {s['notSelected']} not selected by the definition.",
    ]
    if s["excludedBy"]:
        lines.append(
            "Out because: "
            + ", ".join(f"{code} {n}" for code, n in sorted(s["excludedBy"].items()))
            + "."
        )
    if not report["checks"]["grids"]:
        lines.append("Files were not inspected: grids and label values are unchecked.")
    lines += ["", "| Session | Subject | In | Split | Why |", "|---|---|---|---|---|"]
    for row in report["sessions"]:
        split = row["split"] + (f" (fold {row['fold']})" if "fold" in row else "")
        why = "; ".join(f"{r['code']}: {r['message']}" for r in row["reasons"])
        lines.append(
            f"| {_cell(row['session'])} | {_cell(row['subject'])} | "
            f"{'yes' if row['included'] else 'no'} | {split} | {_cell(why)} |"
        )
    return "\n".join(lines) + "\n"


def _row(outcome: Outcome) -> dict[str, Any]:
    session = outcome.session
    row: dict[str, Any] = {
        "session": session.label,
        "sessionId": session.id,
        "subject": session.subject_label,
        "subjectId": session.subject_id,
        "included": outcome.included,
        "split": "",
        "files": {tag: ref.uri for tag, ref in sorted(outcome.files.items())},
        "reasons": [
            {"code": r.code, "message": r.message, **({"tag": r.tag} if r.tag else {})}
            for r in outcome.reasons
        ],
    }
    if outcome.split.startswith("fold"):
        row["split"], row["fold"] = "training", int(outcome.split[4:])
    else:
        row["split"] = outcome.split
    return row


def _only_unselected(outcome: Outcome) -> bool:
    return [r.code for r in outcome.reasons] == [NOT_SELECTED]


def _cell(text: str) -> str:
    """Table-safe text: pipes escaped, line breaks flattened."""
    return " ".join(str(text).split()).replace("|", r"\|")
