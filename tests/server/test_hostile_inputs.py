"""Hostile and broken input the server must refuse with one line and nothing stored: XML bombs in
ROI and container output files, control and bidirectional-override characters in names and
archive members, and field values that are not of their XSD type. (That authentication comes
before any other hook is tested in test_core_auth.py.)"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import requests

from xnat_ml.errors import XnatMlError

pytestmark = pytest.mark.timeout(300)

AIM_NS = 'xmlns="gme://caCORE.caCORE/4.4/edu.northwestern.radiology.AIM"'
LAUGHS_DTD = (
    '<?xml version="1.0"?><!DOCTYPE ImageAnnotationCollection [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
)
XXE_DTD = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


def _aim(name: str, prolog: str = "") -> bytes:
    return (
        f'{prolog}<ImageAnnotationCollection {AIM_NS}><imageAnnotations><ImageAnnotation>'
        f'<name value="{name}"/></ImageAnnotation></imageAnnotations>'
        "</ImageAnnotationCollection>"
    ).encode()


def _rows(reply: requests.Response) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return reply.json()["ResultSet"]["Result"]


def _one_line_400(reply: requests.Response, *words: str) -> None:
    assert reply.status_code == 400, reply.text
    assert reply.text.count("\n") == 1, reply.text
    for word in words:
        assert word in reply.text, reply.text


def _staging_empty(xnat_server) -> bool:
    staging = xnat_server.data_dir / "staging"
    return not staging.exists() or not any(staging.iterdir())


@pytest.fixture
def session(xnat_server, project) -> dict:
    """An MR session in a fresh project: its ID, project and base URLs."""
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/subjects/S1"
    http.put(base).raise_for_status()
    made = http.put(f"{base}/experiments/MR1", params={"xsiType": "xnat:mrSessionData"})
    made.raise_for_status()
    return {"id": made.text, "project": project, "subject": base,
            "uri": f"{xnat_server.url}/data/experiments/{made.text}"}  # fmt: skip


# ----------------------------------------------------------------------------- XML parsers


def _roi_put(xnat_server, session: dict, body: bytes, label: str = "aim1"):
    url = (f"{xnat_server.url}/xapi/roi/projects/{session['project']}/sessions/{session['id']}"
           f"/collections/{label}")  # fmt: skip
    return xnat_server.session().put(url, params={"type": "AIM"}, data=body)


def test_an_aim_collection_is_read(xnat_server, session):
    reply = _roi_put(xnat_server, session, _aim("Lesion 1"))
    assert reply.status_code == 200, reply.text
    [row] = _rows(xnat_server.session().get(f"{session['uri']}/assessors",
                                            params={"columns": "label,name,collectionType"}))
    assert (row["label"], row["name"], row["collectionType"]) == ("aim1", "Lesion 1", "AIM")


@pytest.mark.parametrize(
    "body", [_aim("&lol3;", LAUGHS_DTD), _aim("&xxe;", XXE_DTD)], ids=["billion-laughs", "xxe"]
)
def test_aim_entity_tricks_are_400_and_store_nothing(xnat_server, session, body):
    reply = _roi_put(xnat_server, session, body)
    _one_line_400(reply, "ROI collection aim1", "AIM")
    assert _rows(xnat_server.session().get(f"{session['uri']}/assessors")) == []
    assert _staging_empty(xnat_server)


@pytest.mark.parametrize("prolog,entity", [(LAUGHS_DTD, "&lol3;"), (XXE_DTD, "&xxe;")],
                         ids=["billion-laughs", "xxe"])  # fmt: skip
def test_container_output_xml_with_entities_is_refused_before_upload(tmp_path, prolog, entity):
    """The job side reads a container's output document with the same care as the server."""
    from xnat_ml.containers.archive import ArchiveClient

    document = tmp_path / "assessor.xml"
    document.write_text(
        f'{prolog}<icr:roiCollectionData xmlns:icr="http://www.icr.ac.uk/icr" label="a">'
        f"<icr:name>{entity}</icr:name></icr:roiCollectionData>"
    )
    client = ArchiveClient("http://127.0.0.1:9", "nobody", "nothing")  # never contacted
    with pytest.raises(XnatMlError, match="assessor.xml"):
        client.upload_xml("/archive/experiments/E1", "Assessor", document)


# ----------------------------------------------------------------------------- names


BIDI = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c"]
CONTROL = ["\x00", "\x1b", "\x7f", "\x85", "\x9b"]


def _zip_with(name: str) -> bytes:
    """A zip with one member of this name (written raw: zipfile itself cuts names at NUL)."""
    placeholder = "€" + "P" * (len(name.encode()) - 3)  # non-ASCII: zipfile flags it UTF-8
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("fine.txt", b"ok")
        archive.writestr(zipfile.ZipInfo(f"d/{placeholder}"), b"evil")
    return buf.getvalue().replace(placeholder.encode(), name.encode())


def _tar_with(name: str) -> bytes:
    """A .tar.gz whose second member has this name, in a PAX header (which can carry a NUL)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for member, data in (("fine.txt", b"ok"), (f"d/{name}", b"evil")):
            info = tarfile.TarInfo("placeholder")
            info.pax_headers = {"path": member}
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x9b", "\u202e", "\u2067"])
@pytest.mark.parametrize("pack,suffix", [(_zip_with, "zip"), (_tar_with, "tar.gz")])
def test_archive_members_with_control_or_bidi_characters_are_refused(
    xnat_server, project, pack, suffix, char
):
    base = f"{xnat_server.url}/data/projects/{project}/resources/Z"
    http = xnat_server.session()
    reply = http.put(f"{base}/files/up.{suffix}", params={"extract": "true"},
                     data=pack(f"a{char}b.txt"))  # fmt: skip
    _one_line_400(reply, "archive member", f"U+{ord(char):04X}")
    assert http.get(f"{base}/files", params={"format": "json"}).status_code == 404
    assert _staging_empty(xnat_server)
    assert not list((xnat_server.data_dir / "archive").rglob("fine.txt"))


@pytest.mark.parametrize("char", BIDI + CONTROL[1:])
def test_file_paths_and_resource_labels_with_control_or_bidi_characters_are_400(
    xnat_server, project, char
):
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/resources"
    reply = http.put(f"{base}/R/files/evil{char}txt.exe", data=b"x")
    _one_line_400(reply, "file path", f"U+{ord(char):04X}")
    reply = http.put(f"{base}/R{char}x/files/ok.txt", data=b"x")
    _one_line_400(reply, "Resource label", f"U+{ord(char):04X}")
    reply = http.put(f"{base}/R{char}x")
    _one_line_400(reply, "Resource label")
    assert _rows(http.get(base)) == []


@pytest.mark.parametrize(
    ("tail", "words"),
    [
        ("subjects/a%C2%85b", ("Subject label", "U+0085")),
        ("subjects/S1/experiments/" + "x" * 300, ("Experiment label", "longer than 255")),
        ("subjects/S1/experiments/E%1B/resources", ("Experiment label", "U+001B")),
    ],
)
def test_paths_naming_what_no_object_can_be_are_400(xnat_server, project, tail, words):
    """The archive-path grammar (xnat/uris.py) refuses the name for reads too, in one line;
    a well-formed name that is absent stays a 404."""
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}"
    _one_line_400(http.get(f"{base}/{tail}"), *words)
    assert http.get(f"{base}/subjects/absent").status_code == 404


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\x85"])
def test_object_labels_with_bidi_or_control_characters_are_400(xnat_server, session, char):
    http = xnat_server.session()
    reply = http.put(f"{session['subject']}/experiments/MR{char}2",
                     params={"xsiType": "xnat:mrSessionData"})  # fmt: skip
    _one_line_400(reply, "Experiment label")
    reply = http.put(f"{session['uri']}", params={"label": f"MR{char}1"})
    _one_line_400(reply, "label")
    reply = http.put(f"{session['uri']}/scans/1{char}", params={"xsiType": "xnat:mrScanData"})
    _one_line_400(reply, "Scan label")
    assert _rows(http.get(f"{session['uri']}/scans")) == []


@pytest.mark.parametrize("field", ["username", "firstName", "lastName", "email"])
@pytest.mark.parametrize("char", ["\u202e", "\x00", "\x1b", "\u200f"])
def test_user_names_with_bidi_or_control_characters_are_400(xnat_server, field, char):
    body = {"username": f"bidi_{field}", "password": "pw", "email": "b@example.org",
            "firstName": "B", "lastName": "C"}  # fmt: skip
    body[field] = f"ab{char}c" if field != "email" else f"a{char}@example.org"
    http = xnat_server.session()
    reply = http.post(f"{xnat_server.url}/xapi/users", json=body)
    _one_line_400(reply, field if field != "username" else "Username")
    assert body["username"] not in http.get(f"{xnat_server.url}/xapi/users").json()


# ----------------------------------------------------------------------------- typed fields


@pytest.mark.parametrize(
    "field,value",
    [
        ("date", "2024-13-45"),
        ("date", "2023-02-29"),
        ("date", "20241301"),
        ("date", "yesterday"),
        ("time", "25:00:00"),
        ("time", "12:61:00"),
        ("time", "noon"),
        ("xnat:mrSessionData/date", "2024-00-10"),
    ],
)
def test_experiment_dates_and_times_are_checked_by_their_xsd_type(xnat_server, session, field,
                                                                   value):  # fmt: skip
    http = xnat_server.session()
    reply = http.put(f"{session['subject']}/experiments/MR2",
                     params={"xsiType": "xnat:mrSessionData", field: value})  # fmt: skip
    _one_line_400(reply, field.rsplit("/", 1)[-1], repr(value))
    assert [r["label"] for r in _rows(http.get(f"{session['subject']}/experiments"))] == ["MR1"]
    reply = http.put(session["uri"], params={field: value})  # an update is held to the same rule
    _one_line_400(reply, repr(value))
    fields = http.get(session["uri"], params={"format": "json"}).json()["items"][0]["data_fields"]
    assert fields.get("date", "") == "" and fields.get("time", "") == ""


def test_good_dates_times_and_numbers_are_stored(xnat_server, session):
    http = xnat_server.session()
    reply = http.put(session["uri"], params={"date": "20240229", "time": "23:59:59"})
    assert reply.status_code == 200, reply.text
    fields = http.get(session["uri"], params={"format": "json"}).json()["items"][0]["data_fields"]
    assert (fields["date"], fields["time"]) == ("2024-02-29", "23:59:59")
    reply = http.put(f"{session['uri']}/scans/1",
                     params={"xsiType": "xnat:mrScanData", "frames": "176"})  # fmt: skip
    assert reply.status_code == 201, reply.text


@pytest.mark.parametrize("value", ["many", "1.5", "1e3", "12 frames", "0x10"])
def test_scan_frames_must_be_an_integer(xnat_server, session, value):
    http = xnat_server.session()
    reply = http.put(f"{session['uri']}/scans/1",
                     params={"xsiType": "xnat:mrScanData", "frames": value})  # fmt: skip
    _one_line_400(reply, "frames", "xs:integer")
    assert _rows(http.get(f"{session['uri']}/scans")) == []


ICR = 'xmlns:icr="http://www.icr.ac.uk/icr" xmlns:xnat="http://nrg.wustl.edu/xnat"'


@pytest.mark.parametrize("element,value", [("xnat:date", "2024-13-45"), ("xnat:time", "7pm")])
def test_xml_documents_are_held_to_the_same_types(xnat_server, session, element, value):
    document = (f'<icr:roiCollectionData {ICR} label="auto"><{element}>{value}</{element}>'
                "</icr:roiCollectionData>")  # fmt: skip
    http = xnat_server.session()
    reply = http.put(f"{session['uri']}/assessors/auto", params={"inbody": "true"},
                     data=document.encode())  # fmt: skip
    _one_line_400(reply, element.split(":")[1], repr(value))
    assert _rows(http.get(f"{session['uri']}/assessors")) == []


def test_dicom_dates_that_are_no_dates_are_not_stored(tmp_path: Path):
    from xnat_ml.server.formats.dicom_headers import _date

    assert _date("20240229") == "2024-02-29"
    assert _date("20241345") == ""


def test_field_types_come_from_the_served_xsd():
    from xnat_ml.server.formats.datatypes import field_type

    assert field_type("xnat:mrSessionData", "date") == "xs:date"  # inherited from experimentData
    assert field_type("icr:roiCollectionData", "TIME") == "xs:time"
    assert field_type("xnat:ctScanData", "frames") == "xs:integer"
    assert field_type("xnat:subjectData", "group") == "xs:string"
    assert field_type("xnat:subjectData", "anything_else") is None


@pytest.mark.parametrize(
    "xs_type,good,bad",
    [
        ("xs:date", {"2024-02-29": "2024-02-29", "20240101": "2024-01-01", " 2024-01-01 ":
                     "2024-01-01"}, ["2024-13-45", "2024-1-1", "24-01-01", "2024-01-01T00:00"]),
        ("xs:time", {"07:05:00": "07:05:00", "07:05": "07:05:00", "23:59:59.5": "23:59:59.5"},
         ["24:00:00", "7:05", "07:05:60", "07-05-00"]),
        ("xs:dateTime", {"2024-01-02T03:04:05": "2024-01-02T03:04:05"},
         ["2024-01-02", "2024-02-30T00:00:00", "2024-01-02T25:00:00"]),
        ("xs:integer", {"-12": "-12", "+3": "+3"}, ["1.0", "1e2", "ten", "١٢"]),
        ("xs:decimal", {"1.5": "1.5", "-.5": "-.5", "3": "3.0"}, ["1e3", "1,5", "NaN"]),
        ("xs:float", {"1e3": "1000.0", "-INF": "-INF", "NaN": "NaN"}, ["e3", "inf", "1.2.3"]),
        ("xs:boolean", {"true": "true", "0": "0"}, ["yes", "True", "2"]),
    ],
)  # fmt: skip
def test_value_checks_by_xsd_type(xs_type, good, bad):
    from werkzeug.exceptions import BadRequest

    from xnat_ml.server.formats.validation import check_value

    for value, stored in good.items():
        assert check_value(xs_type, "f", value) == stored
    assert check_value(xs_type, "f", "") == ""
    for value in bad:
        with pytest.raises(BadRequest, match=f"Field 'f': .* is not an {xs_type}"):
            check_value(xs_type, "f", value)
