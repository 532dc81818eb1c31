"""Event filter matching: type, status, project, and XNAT-style JSONPath payload predicates."""

from __future__ import annotations

import pytest

from xnat_ml.events import Event, FilterError, Match, event_type_for, match, payload_passes
from xnat_ml.events.filters import compile_predicate, normalise_predicate

ASSESSOR_EVENT = "org.nrg.xnat.eventservice.events.ImageAssessorEvent"

# An ROI collection serialised as XNAT's event-service Assessor model object.
ROI = {
    "id": "XNAT_E00007",
    "label": "liver_rt",
    "xsiType": "icr:roiCollectionData",
    "uri": "/archive/experiments/XNAT_E00005/assessors/XNAT_E00007",
    "project-id": "LIVER",
    "session-id": "XNAT_E00005",
    "collectionType": "RTSTRUCT",
    "props": {"collectiontype": "RTSTRUCT"},
    "resources": [{"label": "RTSTRUCT", "format": "DICOM"}, {"label": "SNAPSHOTS"}],
}


def roi_event(**changes) -> Event:
    fields = {"type": ASSESSOR_EVENT, "status": "CREATED", "project": "LIVER", "payload": ROI}
    return Event(**(fields | changes))


def a_filter(**changes) -> dict:
    return {"event-type": ASSESSOR_EVENT, "status": "CREATED", "project-ids": ["LIVER"]} | changes


@pytest.mark.parametrize(
    ("predicate", "passes"),
    [
        ('@.xsiType == "icr:roiCollectionData"', True),
        ("@.xsiType == 'icr:roiCollectionData' && @.collectionType == 'RTSTRUCT'", True),
        ("@.xsiType == 'icr:roiCollectionData' && @.collectionType == 'SEG'", False),
        ("@.collectionType == 'SEG' || @.collectionType == 'RTSTRUCT'", True),
        ('@.props.collectiontype == "RTSTRUCT"', True),
        ('@.xsiType =~ /icr:.*/', True),  # Jayway regex literal
        ("'RTSTRUCT' in @.resources[*].label", True),  # Jayway's `in`, as the CS docs write it
        ("'NIFTI' in @.resources[*].label", False),
        # Jayway compares a wildcard path's whole list: use `in` for "some element equals".
        ('@.resources[*].label == "SNAPSHOTS"', False),
        ("'SNAPSHOTS' in @.resources[*].label", True),
        ("!(@.collectionType == 'SEG')", True),
        ("@.no_such_field == 'x'", False),
        ("@.label > 3", False),  # comparing a string with a number: a mismatch, not a crash
        ("$[?(@.xsiType == 'icr:roiCollectionData' && @.collectionType == 'RTSTRUCT')]", True),
        ("", True),
    ],
)
def test_payload_predicates(predicate, passes):
    assert payload_passes(normalise_predicate(predicate), ROI) is passes


def test_wrapped_filter_is_stored_bare():
    assert normalise_predicate(" $[?(@.a == 1)] ") == "@.a == 1"
    assert normalise_predicate("@.a == 1") == "@.a == 1"


@pytest.mark.parametrize(
    "predicate",
    [
        "@.xsiType ==",
        "@.resources.length() > 0",
        "@.a === 1",
        "@.a == 'unterminated",
        "((((",
        "@.a == 1 ]; DROP TABLE",
        "x" * 5000,
    ],
)
def test_bad_predicates_are_reported(predicate):
    with pytest.raises(FilterError, match="payload filter"):
        compile_predicate(predicate)


def test_match_selects_on_type_status_and_project():
    assert match(a_filter(), roi_event()) is Match.MATCHED
    assert (
        match(a_filter(), roi_event(type="org.nrg.xnat.eventservice.events.ScanEvent"))
        is Match.NOT_SELECTED
    )
    assert match(a_filter(), roi_event(status="UPDATED")) is Match.NOT_SELECTED
    assert match(a_filter(status=None), roi_event(status="UPDATED")) is Match.MATCHED
    assert match(a_filter(), roi_event(project="OTHER")) is Match.NOT_SELECTED
    # No projects (or XNAT's [""]) means every project.
    assert match(a_filter(**{"project-ids": []}), roi_event(project="OTHER")) is Match.MATCHED
    assert match(a_filter(**{"project-ids": [""]}), roi_event(project="OTHER")) is Match.MATCHED


def test_match_reports_payload_mismatch_separately():
    seg_only = a_filter(**{"payload-filter": "@.collectionType == 'SEG'"})
    assert match(seg_only, roi_event()) is Match.FILTER_MISMATCH
    rt_only = a_filter(**{"payload-filter": "@.collectionType == 'RTSTRUCT'"})
    assert match(rt_only, roi_event()) is Match.MATCHED


@pytest.mark.parametrize(
    ("kind", "xsi_type", "expected"),
    [
        ("project", "xnat:projectData", "ProjectEvent"),
        ("subject", "xnat:subjectData", "SubjectEvent"),
        ("session", "xnat:ctSessionData", "SessionEvent"),
        ("experiment", "xnat:mrSessionData", "SessionEvent"),
        ("experiment", "xnat:qcManualAssessorData", "SubjectAssessorEvent"),
        ("scan", "xnat:ctScanData", "ScanEvent"),
        ("resource", "xnat:resourceCatalog", "ResourceEvent"),
        ("assessor", "icr:roiCollectionData", "ImageAssessorEvent"),
    ],
)
def test_event_type_for_created_objects(kind, xsi_type, expected):
    assert event_type_for(kind, xsi_type).name == expected


def test_unknown_kind_raises_no_event():
    assert event_type_for("file", None) is None
