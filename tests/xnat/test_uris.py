"""REST paths: every label is one quoted segment; the archive-path grammar refuses hostile
paths (relative steps, empty segments, encoded slashes, control characters, overlong)."""

import re

import pytest

from xnat_ml.xnat.uris import (
    MAX_NAME,
    MAX_PATH,
    OBJECT_PATTERN,
    ObjectPath,
    UnsafeName,
    UriError,
    parse_path,
    resource_uri,
    roi_collection_uri,
    scan_uri,
    subject_uri,
)


def test_odd_labels_stay_one_segment():
    assert subject_uri("P 1", "a/b?c") == "/data/projects/P%201/subjects/a%2Fb%3Fc"
    assert scan_uri("E1", "2") == "/data/experiments/E1/scans/2"
    assert resource_uri("/data/projects/P/", "Ünïcode #1") == (
        "/data/projects/P/resources/%C3%9Cn%C3%AFcode%20%231"
    )
    assert roi_collection_uri("P", "E1", "../x") == (
        "/xapi/roi/projects/P/sessions/E1/collections/..%2Fx"
    )


# ----------------------------------------------------------------------------- the grammar

SESSION = (("experiments", "XNAT_E00001"),)


@pytest.mark.parametrize(
    ("path", "steps", "resource", "file", "kind"),
    [
        ("/data/projects/P", (("projects", "P"),), None, None, "Project"),
        ("/data/archive/projects/P/subjects/S/", (("projects", "P"), ("subjects", "S")),
         None, None, "Subject"),
        ("/REST/projects/P/experiments/E", (("projects", "P"), ("experiments", "E")),
         None, None, "Experiment"),
        ("/archive/experiments/XNAT_E00001/scans/1", (*SESSION, ("scans", "1")),
         None, None, "Scan"),
        ("/experiments/XNAT_E00001/assessors/A", (*SESSION, ("assessors", "A")),
         None, None, "Assessor"),
        ("subjects/S/experiments/E", (("subjects", "S"), ("experiments", "E")),
         None, None, "Experiment"),
        ("/data/experiments/XNAT_E00001/resources/NIFTI", SESSION, "NIFTI", None, "Resource"),
        ("/data/projects/P/subjects/S/experiments/E/scans/1/resources/DICOM/files/a/b.dcm",
         (("projects", "P"), ("subjects", "S"), ("experiments", "E"), ("scans", "1")),
         "DICOM", "a/b.dcm", "File"),
    ],
)  # fmt: skip
def test_every_form_of_archive_path_parses(path, steps, resource, file, kind):
    parsed = parse_path(path)
    assert (parsed.steps, parsed.resource, parsed.file) == (steps, resource, file)
    assert parsed.kind == kind
    assert parsed.owner() == ObjectPath(steps)


def test_built_paths_parse_back_to_the_same_names():
    odd = ObjectPath((("projects", "P 1"), ("subjects", "ä?b#")), "R %", "dir/x y.nii")
    uri = odd.uri("/archive")
    assert uri == (
        "/archive/projects/P%201/subjects/%C3%A4%3Fb%23/resources/R%20%25/files/dir/x%20y.nii"
    )
    assert parse_path(uri) == odd
    assert parse_path(subject_uri("P", "S")).uri() == "/data/projects/P/subjects/S"


def test_a_decoded_path_keeps_percent_signs_as_they_are():
    assert parse_path("/data/projects/a%41", quoted=False).steps == (("projects", "a%41"),)
    assert parse_path("/data/projects/a%41").steps == (("projects", "aA"),)


@pytest.mark.parametrize(
    "path",
    [
        "", "/", "/data", "/data/projects", "/data/projects/P/scans/1",
        "/data/subjects/S/scans/1", "/data/projects/P/subjects", "/data/widgets/W",
        "/data/projects//P", "/data/projects/P//subjects/S", "/data/projects/P/resources//files/x",
        "/data/projects/../etc", "/etc/passwd", "//",
        "x" * (MAX_PATH + 1),
    ],
)  # fmt: skip
def test_what_is_no_archive_path_is_refused(path):
    with pytest.raises(UriError):
        parse_path(path)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/data/projects/..", "Project label '..'"),
        ("/data/projects/.", "Project label '.'"),
        ("/data/projects/P/subjects/%2E%2E", "Subject label '..'"),
        ("/data/experiments/E/scans/a%2Fb", "Scan label 'a/b' holds a slash"),
        ("/data/experiments/E/scans/a%5Cb", "Scan label 'a\\\\b' holds a slash"),
        ("/data/projects/P/resources/R/files/a/../b", "file path '..'"),
        ("/data/projects/P/resources/R/files/a//b", "file path ''"),
        ("/data/projects/P/resources/R/files/a%2F..%2Fb", "file path 'a/../b' holds a slash"),
        ("/data/projects/a%00b", "U+0000"),
        ("/data/projects/P/subjects/a%1Bb", "Subject label"),
        ("/data/projects/P/subjects/a%C2%85", "U+0085"),
        ("/data/projects/P/resources/R%7F", "Resource label"),
        ("/data/projects/%FF", "not UTF-8"),
        ("/data/projects/" + "a" * (MAX_NAME + 1), f"longer than {MAX_NAME}"),
    ],
)  # fmt: skip
def test_hostile_names_are_refused_with_one_line_naming_the_name(path, words):
    with pytest.raises(UnsafeName) as caught:
        parse_path(path)
    message = str(caught.value)
    assert words in message and "\n" not in message and len(message) < 400


def test_control_characters_in_a_decoded_path_are_refused_too():
    with pytest.raises(UnsafeName, match=r"U\+0009"):
        parse_path("/data/projects/P/subjects/a\tb", quoted=False)


def test_the_route_pattern_is_the_grammars_object_part():
    pattern = re.compile(OBJECT_PATTERN)
    assert pattern.fullmatch("projects/P/subjects/S/experiments/E/assessors/A")
    assert pattern.fullmatch("experiments/E/scans/1")
    assert not pattern.fullmatch("projects/P/scans/1")
    assert not pattern.fullmatch("projects/P/resources/R")
