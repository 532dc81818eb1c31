"""Which files of a session a tag's criteria select (the TaggedResourceMap rules).

Values of one key are ORed, keys are ANDed, an absent key matches anything. ``SeriesDescription``
matches a scan's type, series description or series class; on an ROI collection it matches the
scan the collection was drawn on. ``Origin`` keeps ROI collections of the given origins;
``Prefer`` drops, among the collections drawn on one scan, those of another origin when one of
the preferred origin is there. Every selected file is returned: the caller decides what several
mean (the plugin silently kept one; we report them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from xnat_ml.datasets.definition import Definition, TagCriteria
from xnat_ml.datasets.patterns import Pattern
from xnat_ml.datasets.records import FileRef, Resource, RoiCollection, Scan, Session

UNKNOWN = "unknown"


def origin_of(roi: RoiCollection) -> str:
    """Who made the collection: its recorded origin; without a record, ``human`` for an
    RTSTRUCT (annotation tools write them, models here write SEGs), else ``unknown``."""
    if roi.origin:
        return roi.origin
    return "human" if roi.collection_type == "RTSTRUCT" else UNKNOWN


def any_match(patterns: tuple[Pattern, ...], *values: str) -> bool:
    """True when no patterns are given, or one of them matches one of the values."""
    return not patterns or any(p.matches(v) for p in patterns for v in values if v)


def session_selected(definition: Definition, session: Session) -> bool:
    """Whether the definition's ``subjects`` and ``sessions`` patterns let the session in."""
    return any_match(definition.subjects, session.subject_label, session.subject_id) and any_match(
        definition.sessions, session.label, session.id
    )


def scan_matches(tag: TagCriteria, scan: Scan) -> bool:
    return any_match(tag.series, scan.type, scan.series_description, scan.series_class)


def candidates(session: Session, tag: TagCriteria, scans_by_uid: dict[str, Scan]) -> list[FileRef]:
    """The files of ``session`` that ``tag`` selects, in listing order.

    ``scans_by_uid`` maps the session's series UIDs to its scans (built once per session).
    """
    if tag.source == "scan":
        sources: Iterable[Scan | RoiCollection] = (s for s in session.scans if scan_matches(tag, s))
    else:
        sources = (
            roi
            for roi in session.roi_collections
            if any_match(tag.collection_type, roi.collection_type)
            and any_match(tag.collection_name, roi.name, roi.label)
            and (not tag.series or _drawn_on_matching(tag, roi, scans_by_uid))
            and (not tag.origin or origin_of(roi) in tag.origin)
        )
    found = [ref for source in sources for ref in _files(session, source, tag)]
    return _preferred(found, tag.prefer) if tag.prefer else found


def other_origins(
    session: Session, tag: TagCriteria, scans_by_uid: dict[str, Scan]
) -> list[FileRef]:
    """The files ``tag`` would select but for its ``Origin``: why a session has none."""
    if not tag.origin:
        return []
    found = candidates(session, replace(tag, origin=(), prefer=""), scans_by_uid)
    return [ref for ref in found if origin_of(ref.source) not in tag.origin]  # type: ignore[arg-type]


def _preferred(found: list[FileRef], prefer: str) -> list[FileRef]:
    """``found`` less the collections of another origin drawn on a scan that has one of the
    preferred origin."""
    preferred_scans = {
        ref.source.series_uid
        for ref in found
        if isinstance(ref.source, RoiCollection) and origin_of(ref.source) == prefer
    }
    return [
        ref
        for ref in found
        if not isinstance(ref.source, RoiCollection)
        or origin_of(ref.source) == prefer
        or ref.source.series_uid not in preferred_scans
    ]


def _drawn_on_matching(tag: TagCriteria, roi: RoiCollection, scans: dict[str, Scan]) -> bool:
    scan = scans.get(roi.series_uid)
    return scan is not None and scan_matches(tag, scan)


def _files(session: Session, source: Scan | RoiCollection, tag: TagCriteria) -> Iterator[FileRef]:
    for resource in source.resources:
        if _resource_matches(tag, resource):
            for entry in resource.files:
                if any_match(tag.file_name, entry.name):
                    yield FileRef(session, source, resource, entry)


def _resource_matches(tag: TagCriteria, resource: Resource) -> bool:
    return (
        any_match(tag.resource_label, resource.label)
        and any_match(tag.resource_format, resource.format)
        and any_match(tag.resource_content, resource.content)
    )
