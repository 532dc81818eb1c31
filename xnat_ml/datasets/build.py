"""Definition + session records -> validated, split dataset: the datalist and its report.

Each session is in or out, and every reason it is out is recorded, so a user can fix the archive
or the definition instead of guessing why the dataset shrank. Matching problems are found first;
files are inspected only for sessions that matched cleanly. Everything is one pass over the
sessions (no per-session scans of the whole project), so thousands of sessions take milliseconds
apart from what ``inspect`` itself costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xnat_ml.datasets import datalist as dl
from xnat_ml.datasets.definition import LABEL_TAG, Definition, TagCriteria
from xnat_ml.datasets.matching import candidates, origin_of, other_origins, session_selected
from xnat_ml.datasets.reasons import (
    EMPTY_LABEL,
    GRID_MISMATCH,
    MISSING_REQUIRED,
    NO_ACCESS,
    NO_MATCH,
    NOT_SELECTED,
    OTHER_ORIGIN,
    OUTSIDE_LABELMAP,
    SEVERAL_MATCHES,
    UNREADABLE,
    WRONG_REFERENCE,
    Reason,
)
from xnat_ml.datasets.records import FileRef, Inspect, NiftiInfo, RoiCollection, Scan, Session
from xnat_ml.datasets.report import report_json, report_markdown
from xnat_ml.datasets.splits import assign_splits
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import GRID_TOL_MM, LabelMap

MAX_LISTED_MATCHES = 5


@dataclass
class Outcome:
    """One session's verdict: the file per tag, why it is out (if it is), and its split."""

    session: Session
    files: dict[str, FileRef] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)
    split: str = ""  # training / validation / testing, or fold{i}

    @property
    def included(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class Build:
    """The result: ``datalist`` (stored form, archive URIs) and ``report`` (report.json)."""

    definition: Definition
    outcomes: tuple[Outcome, ...]
    datalist: dict[str, Any]
    report: dict[str, Any]

    def report_markdown(self) -> str:
        return report_markdown(self.report)

    def empty_splits(self) -> list[str]:
        """Splits the definition asks for (a share above zero) that got no subject: a testing
        split left empty by too few subjects would pass unnoticed until evaluation."""
        got = self.report["summary"]["perSplit"]
        return [name for name, share in self.definition.split.shares if share and not got.get(name)]

    def check(self, strict: bool = False) -> None:
        """Raise when the dataset is unusable: no session in, or (``strict``) any excluded.
        Write the report first: the message points to it."""
        summary = self.report["summary"]
        name = self.datalist["name"]
        if strict and summary["excluded"]:
            codes = ", ".join(f"{c} {n}" for c, n in sorted(summary["excludedBy"].items()))
            raise XnatMlError(
                f"dataset {name}: {summary['excluded']} session(s) excluded ({codes}) and "
                "--strict is set; see report.md"
            )
        if not summary["included"]:
            raise XnatMlError(f"dataset {name}: no session qualifies; see report.md")


def build_dataset(
    definition: Definition,
    sessions: Iterable[Session],
    *,
    labelmap: LabelMap | None = None,
    inspect: Inspect | None = None,
    previous: Mapping[str, str] | None = None,
    name: str = "",
) -> Build:
    """Match, validate and split ``sessions`` by ``definition``.

    ``labelmap`` is the map the definition names (the caller loads it; an inline map in the
    definition wins). ``inspect`` reads NIfTI headers and label values; without it grids and
    label values go unchecked (the report says so). ``previous`` is the last version's
    ``{subject: split}`` (``datalist.previous_assignment``): those subjects keep their split.
    """
    name = name or definition.title or definition.id or "dataset"
    if isinstance(definition.labelmap, LabelMap):
        labelmap = definition.labelmap
    if definition.label and labelmap is None:
        raise XnatMlError(f"dataset {name}: label map {definition.labelmap} was not given")
    required = _required_values(definition, labelmap, name)
    outcomes = [_assess(s, definition, labelmap, required, inspect) for s in sessions]
    included = [o for o in outcomes if o.included]
    splits = assign_splits({o.session.subject_label for o in included}, definition.split, previous)
    items: dict[str, list[dict[str, Any]]] = {key: [] for key in dl.LISTS}
    for outcome in included:
        outcome.split = splits[outcome.session.subject_label]
        key, item = _item(outcome, definition)
        items[key].append(item)
    labels = {lab.value: lab.name for lab in labelmap.labels} if labelmap else {}
    doc = dl.datalist(items, name=name, description=definition.description, labels=labels)
    outcomes.sort(key=lambda o: (o.session.subject_label, o.session.label, o.session.id))
    report = report_json(
        name=name,
        definition=definition,
        labelmap=labelmap,
        checked=inspect is not None,
        outcomes=outcomes,
    )
    return Build(definition, tuple(outcomes), doc, report)


def _required_values(definition: Definition, labelmap: LabelMap | None, name: str) -> set[int]:
    values: set[int] = set()
    for wanted in definition.required_labels:
        where = f"dataset {name}: requiredLabels {wanted!r}"
        if labelmap is None:
            raise XnatMlError(f"{where}: the definition has no label tag to require it of")
        if isinstance(wanted, int):
            if labelmap.by_value(wanted) is None:
                raise XnatMlError(f"{where}: no label has that value in {labelmap.source}")
            values.add(wanted)
            continue
        hits = labelmap.match(wanted)
        if len(hits) != 1:
            raise XnatMlError(f"{where}: names {len(hits)} labels in {labelmap.source}, not one")
        values.add(hits[0].value)
    return values


def _assess(
    session: Session,
    definition: Definition,
    labelmap: LabelMap | None,
    required: set[int],
    inspect: Inspect | None,
) -> Outcome:
    outcome = Outcome(session)
    reasons = outcome.reasons
    if not session_selected(definition, session):
        reasons.append(Reason(NOT_SELECTED, "left out by the definition's subjects/sessions"))
        return outcome
    if not session.accessible:
        reasons.append(Reason(NO_ACCESS, "the user may not read this session"))
        return outcome
    scans_by_uid = {s.uid: s for s in session.scans if s.uid}
    for tag in definition.tags:
        found = candidates(session, tag, scans_by_uid)
        if not found:
            reasons.append(_no_match(session, tag, scans_by_uid))
        elif len(found) > 1:
            shown = "; ".join(f.describe for f in found[:MAX_LISTED_MATCHES])
            more = (
                f"; and {len(found) - MAX_LISTED_MATCHES} more"
                if len(found) > MAX_LISTED_MATCHES
                else ""
            )
            reasons.append(
                Reason(
                    SEVERAL_MATCHES, f"{tag.tag}: {len(found)} files match: {shown}{more}", tag.tag
                )
            )
        else:
            outcome.files[tag.tag] = found[0]
    if reasons:
        return outcome
    if definition.label:
        _check_reference(outcome, definition, scans_by_uid)
    if inspect is not None and not reasons:
        _check_files(outcome, definition, labelmap, required, inspect)
    return outcome


def _no_match(session: Session, tag: TagCriteria, scans_by_uid: dict[str, Scan]) -> Reason:
    """``no-match``, or ``other-origin`` naming the collections ``Origin`` left out."""
    others = other_origins(session, tag, scans_by_uid)
    if not others:
        return Reason(NO_MATCH, f"{tag.tag}: no file matches", tag.tag)
    shown = "; ".join(
        f"{ref.describe} is {origin_of(ref.source)}"  # type: ignore[arg-type]
        for ref in others[:MAX_LISTED_MATCHES]
    )
    wanted = " or ".join(tag.origin)
    return Reason(OTHER_ORIGIN, f"{tag.tag}: no {wanted} ROI collection: {shown}", tag.tag)


def _check_reference(outcome: Outcome, definition: Definition, scans: dict[str, Scan]) -> None:
    label = outcome.files[LABEL_TAG]
    if not isinstance(label.source, RoiCollection):
        return  # a label stored as a scan resource carries no reference to check
    image_scans = [
        outcome.files[t.tag].source
        for t in definition.images
        if isinstance(outcome.files[t.tag].source, Scan)
    ]
    uid = label.source.series_uid
    if any(scan.uid == uid for scan in image_scans):  # type: ignore[union-attr]
        return
    drawn_on = scans.get(uid)
    on = f"scan {drawn_on.id}" if drawn_on else f"series {uid or '(none given)'}"
    images = ", ".join(f"scan {s.id}" for s in image_scans) or "no scan"
    outcome.reasons.append(
        Reason(
            WRONG_REFERENCE,
            f"label: ROI collection {label.source.id} was drawn on {on}, not on the image "
            f"({images})",
            LABEL_TAG,
        )
    )


def _check_files(
    outcome: Outcome,
    definition: Definition,
    labelmap: LabelMap | None,
    required: set[int],
    inspect: Inspect,
) -> None:
    infos: dict[str, NiftiInfo] = {}
    for tag in definition.tags:
        try:
            infos[tag.tag] = inspect(outcome.files[tag.tag], tag is definition.label)
        except XnatMlError as exc:
            outcome.reasons.append(Reason(UNREADABLE, f"{tag.tag}: {exc}", tag.tag))
    if outcome.reasons:
        return
    first = definition.images[0]
    for tag in definition.tags[1:]:
        problem = _grid_difference(infos[first.tag], infos[tag.tag])
        if problem:
            outcome.reasons.append(
                Reason(
                    GRID_MISMATCH, f"{tag.tag} grid differs from {first.tag}: {problem}", tag.tag
                )
            )
    if definition.label and labelmap is not None:
        _check_values(outcome, definition.label, infos[LABEL_TAG], labelmap, required)


def _grid_difference(a: NiftiInfo, b: NiftiInfo) -> str:
    if a.shape != b.shape:
        return f"shape {list(b.shape)} vs {list(a.shape)}"
    if a.affine == b.affine:
        return ""
    diff = np.abs(np.asarray(a.affine, dtype=float) - np.asarray(b.affine, dtype=float))
    if diff.shape != (4, 4) or not np.all(diff <= GRID_TOL_MM):
        return f"affine differs by up to {float(np.max(diff)):.4g} mm"
    return ""


def _check_values(
    outcome: Outcome, tag: TagCriteria, info: NiftiInfo, labelmap: LabelMap, required: set[int]
) -> None:
    values = info.label_values
    if values is None:
        return
    present = set(values) - {0}
    if not present:
        outcome.reasons.append(
            Reason(EMPTY_LABEL, f"{tag.tag}: every voxel is 0 (nothing drawn)", tag.tag)
        )
        return
    outside = sorted(v for v in present if labelmap.by_value(v) is None)
    if outside:
        outcome.reasons.append(
            Reason(
                OUTSIDE_LABELMAP,
                f"{tag.tag}: values {', '.join(map(str, outside))} are not in {labelmap.source}",
                tag.tag,
            )
        )
    missing = sorted(required - present)
    if missing:
        names = ", ".join(f"{labelmap.by_value(v).name} ({v})" for v in missing)  # type: ignore[union-attr]
        outcome.reasons.append(
            Reason(MISSING_REQUIRED, f"{tag.tag}: lacks required labels {names}", tag.tag)
        )


def _item(outcome: Outcome, definition: Definition) -> tuple[str, dict[str, Any]]:
    images = [outcome.files[t.tag].uri for t in definition.images]
    item: dict[str, Any] = {
        "image": images if len(images) > 1 else images[0],
        "subject": outcome.session.subject_label,
        "session": outcome.session.label,
    }
    if definition.label:
        item["label"] = outcome.files[LABEL_TAG].uri
    if outcome.split.startswith("fold"):
        item["fold"] = int(outcome.split[4:])
        return "training", item
    return outcome.split, item
