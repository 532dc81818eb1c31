"""Pure pieces of the server core: datatype table, XSDs agreeing with it, column selection."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib import resources

import pytest

from xnat_ml.server.formats import datatypes
from xnat_ml.server.formats.listing import filter_rows, page, select_columns

XS = "{http://www.w3.org/2001/XMLSchema}"


def test_supertypes_match_their_subtypes_case_insensitively():
    assert datatypes.is_a("xnat:mrSessionData", "xnat:imageSessionData")
    assert datatypes.is_a("XNAT:MRSESSIONDATA", "xnat:subjectAssessorData")
    assert datatypes.is_a("icr:roiCollectionData", "xnat:imageAssessorData")
    assert not datatypes.is_a("xnat:mrScanData", "xnat:imageSessionData")
    assert not datatypes.is_a("xnat:unknownData", "xnat:experimentData")
    assert datatypes.canonical(" xnat:ctsessiondata ") == "xnat:ctSessionData"
    assert "xnat:imageSessionData" not in datatypes.concrete_types("xnat:subjectAssessorData")
    assert datatypes.session_type_for("pt") == "xnat:petSessionData"
    assert datatypes.scan_type_for("RTSTRUCT") == "xnat:otherDicomScanData"


def _declared_types() -> dict[str, str | None]:
    """complexType name → base, over every XSD the server serves, with namespace prefixes."""
    found: dict[str, str | None] = {}
    for schema in (resources.files("xnat_ml.server.formats") / "schemas").iterdir():
        text = schema.read_text()
        root = ET.fromstring(text)
        prefix = "icr" if "icr.ac.uk" in root.get("targetNamespace", "") else "xnat"
        for node in root.findall(f"{XS}complexType"):
            extension = node.find(f"{XS}complexContent/{XS}extension")
            found[f"{prefix}:{node.get('name')}"] = (
                extension.get("base") if extension is not None else None
            )
    return found


def test_the_served_xsds_declare_every_datatype_with_the_same_inheritance():
    declared = _declared_types()
    for name, base in datatypes.BASE_TYPE.items():
        assert name in declared, name
        assert declared[name] == base, name


ROWS = [
    {"ID": "E1", "label": "a", "date": "2024-01-01", "subject_ID": "S1", "URI": "/e/E1"},
    {"ID": "E2", "label": "b", "date": "2024-01-02", "subject_ID": "S2", "URI": "/e/E2"},
]


def test_columns_are_picked_by_name_case_or_xpath_and_echoed():
    rows = select_columns(
        ROWS,
        ["label", "DATE", "xnat:mrSessionData/subject_id", "nope"],
        aliases={"xnat:subjectdata/id": "subject_ID"},
    )
    assert rows[0] == {
        "label": "a",
        "DATE": "2024-01-01",
        "xnat:mrSessionData/subject_id": "S1",
        "nope": "",
        "subject_ID": "S1",
    }


def test_a_nested_field_is_read_under_either_stored_spelling_row_by_row():
    # /xapi/roi stores `references/seriesUID`, a PUT's query string `references_seriesUID`
    rows = [{"ID": "A", "references/seriesUID": "1.2"}, {"ID": "B", "references_seriesUID": "3.4"}]
    for order in (rows, rows[::-1]):
        picked = select_columns(order, ["ID", "icr:roiCollectionData/references/seriesUID"])
        uids = {r["ID"]: r["icr:roiCollectionData/references/seriesUID"] for r in picked}
        assert uids == {"A": "1.2", "B": "3.4"}


def test_filters_and_paging():
    assert [r["ID"] for r in filter_rows(ROWS, {"label": "b", "format": "json"})] == ["E2"]
    assert [r["ID"] for r in filter_rows(ROWS, {"date": "2024-*"})] == ["E1", "E2"]
    assert page(ROWS, {"offset": "1", "limit": "*"}) == ROWS[1:]
    assert page(ROWS, {"limit": "0"}) == []
    for bad in ({"limit": "x"}, {"offset": "-2"}, {"limit": "1e3"}):
        with pytest.raises(Exception, match="limit and offset"):
            page(ROWS, bad)
