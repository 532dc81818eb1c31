"""Why a session is out of a dataset: the codes report.json uses, one per kind of problem."""

from __future__ import annotations

from dataclasses import dataclass

NOT_SELECTED = "not-selected"  # left out by the definition's subjects/sessions filters
NO_ACCESS = "no-access"  # the user may not read the session
NO_MATCH = "no-match"  # a tag selects no file
OTHER_ORIGIN = "other-origin"  # a tag's only ROI collections are of an origin it leaves out
SEVERAL_MATCHES = "several-matches"  # a tag selects more than one file
WRONG_REFERENCE = "wrong-reference"  # the label's ROI collection was drawn on another scan
UNREADABLE = "unreadable"  # inspect could not read a file
GRID_MISMATCH = "grid-mismatch"  # image channels and label differ in shape or affine
OUTSIDE_LABELMAP = "labels-outside-map"  # label values the label map does not name
EMPTY_LABEL = "empty-label"  # every label voxel is 0
MISSING_REQUIRED = "missing-required"  # a label in requiredLabels is absent

CODES = (
    NOT_SELECTED,
    NO_ACCESS,
    NO_MATCH,
    OTHER_ORIGIN,
    SEVERAL_MATCHES,
    WRONG_REFERENCE,
    UNREADABLE,
    GRID_MISMATCH,
    OUTSIDE_LABELMAP,
    EMPTY_LABEL,
    MISSING_REQUIRED,
)


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    tag: str = ""
