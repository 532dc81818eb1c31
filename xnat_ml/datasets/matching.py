"""Which files of a session a tag's criteria select (the TaggedResourceMap rules).

Values of one key are ORed, keys are ANDed, an absent key matches anything. ``SeriesDescription``
matches a scan's type, series description or series class; on an ROI collection it matches the
scan the collection was drawn on. Every selected file is returned: the caller decides what
several mean (the plugin silently kept one; we report them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from xnat_ml.datasets.definition import TagCriteria
from xnat_ml.datasets.patterns import Pattern
from xnat_ml.datasets.records import FileRef, Resource, RoiCollection, Scan, Session


def any_match(patterns: tuple[Pattern, ...], *values: str) -> bool:
    """True when no patterns are given, or one of them matches one of the values."""
    return not patterns or any(p.matches(v) for p in patterns for v in values if v)


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
        )
    return [ref for source in sources for ref in _files(session, source, tag)]


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
