"""What a build reads of the archive, on the embedded server: the inspection cache (a rebuild
reads nothing, new sessions only their files, a corrupt entry is read again), label files in
zips of several sessions, image grids from roi-to-mask's record only when the MD5 matches,
and the fall-backs for a server without our bulk forms (refused zips, refused project-wide
listings), plus the no-access and missing-required exclusions made on the server."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import requests
from test_project_build import DEFINITION, LABELS, build, reasons

from xnat_ml.datasets import inspector
from xnat_ml.datasets.fetch import fetch_dataset
from xnat_ml.datasets.resolver import list_sessions
from xnat_ml.sample.synthetic import SynthRoi, SynthScan, add_session, nifti_bytes
from xnat_ml.xnat import connect


def moved(index: int) -> np.ndarray:
    """An affine of its own per session, so that every session's files differ."""
    affine = np.eye(4)
    affine[:3, 3] = (index, 0.5 * index, 0)
    return affine


def add(xnat, project: str, index: int, labels: np.ndarray = LABELS, extra=None) -> str:
    """Session SUBnnn_MR: T1w image + ROI collection Rnnn with labels.nii.gz (and extra files
    in its LABELMAP resource); returns the session id."""
    uid = f"1.2.3.{index}"
    image = nifti_bytes(affine=moved(index))
    session_id = add_session(
        xnat, project, f"SUB{index:03d}", f"SUB{index:03d}_MR",
        [SynthScan("1", "T1w", f"{uid}.1", image)],
        [SynthRoi(f"R{index:03d}", f"{uid}.1", nifti_bytes(labels, affine=moved(index)))],
    )  # fmt: skip
    for name, data in (extra or {}).items():
        xnat.put(f"/data/experiments/{session_id}/assessors/R{index:03d}/resources/LABELMAP/"
                 f"files/{name}", data=data, query={"overwrite": "true"},
                 headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    return session_id


def record(index: int, md5: str | None = None) -> bytes:
    """roi-to-mask's masks.json with the image record of session ``index``."""
    image = nifti_bytes(affine=moved(index))
    return json.dumps({"files": {}, "image": {
        "scan": "1", "resource": "NIFTI", "file": "image.nii.gz",
        "md5": md5 or hashlib.md5(image).hexdigest(), "shape": [4, 4, 4],
        "affine": moved(index).tolist()}}).encode()  # fmt: skip


def answer(status: int, body: bytes = b"refused"):
    """A requests response hook answering ``status`` for the URLs ``when(url)`` picks: a
    server that lacks a form, seen from the client."""

    def hook_for(when):
        def hook(response, *args, **kwargs):
            if not when(response.url):
                return None
            response.close()
            fake = requests.Response()
            fake.status_code, fake._content, fake.url = status, body, response.url
            fake.request, fake.encoding = response.request, "utf-8"
            fake._content_consumed = True
            fake.headers["Content-Type"] = "application/json" if status == 200 else "text/plain"
            return fake

        return hook

    return hook_for


@pytest.fixture
def hooked(xnat):
    added = []

    def install(hook):
        xnat.interface.hooks["response"].append(hook)
        added.append(hook)

    yield install
    for hook in added:
        xnat.interface.hooks["response"].remove(hook)


def test_rebuild_reads_nothing_and_a_grown_project_only_its_new_files(
    xnat, labelled, private_cache
):
    for i in range(12):
        add(xnat, labelled, i)
    first = build(xnat, labelled)
    # one zip for the 12 label files, one header request per image (no roi-to-mask record)
    assert first.reads == {"requests": 13, "from_cache": 0, "from_records": 0}
    again = build(xnat, labelled)
    assert again.unchanged and again.reads == {"requests": 0, "from_cache": 24, "from_records": 0}
    for i in (12, 13):
        add(xnat, labelled, i)
    grown = build(xnat, labelled)
    assert grown.version.number == 2
    assert grown.reads == {"requests": 3, "from_cache": 24, "from_records": 0}

    # a corrupt entry is ignored, the file read again and the entry written anew
    entries = sorted((private_cache / "inspections").rglob("*.json"))
    assert len(entries) == 28
    entries[0].write_text('{"shape": [4, 4')
    assert build(xnat, labelled).reads["requests"] == 1
    assert json.loads(entries[0].read_text())["shape"] == [4, 4, 4]


def test_labels_come_in_zips_of_chunk_sessions(xnat, labelled, monkeypatch):
    monkeypatch.setattr(inspector, "CHUNK_SESSIONS", 5)
    for i in range(12):
        add(xnat, labelled, i)
    done = build(xnat, labelled)
    assert done.reads["requests"] == 3 + 12
    assert reasons(done) == {f"SUB{i:03d}_MR": [] for i in range(12)}


def test_image_grid_from_the_record_only_when_its_md5_matches(xnat, labelled):
    add(xnat, labelled, 0, extra={"masks.json": record(0)})
    add(xnat, labelled, 1, extra={"masks.json": record(1, md5="0" * 32)})  # not this file
    # the label is on another grid than the image: found though the record claims nothing
    shifted = LABELS[:3]
    add(xnat, labelled, 2, labels=shifted, extra={"masks.json": record(2)})
    done = build(xnat, labelled)
    assert done.reads == {"requests": 2, "from_cache": 0, "from_records": 2}  # zip + SUB001
    assert reasons(done)["SUB002_MR"] == ["grid-mismatch"]
    assert reasons(done)["SUB000_MR"] == reasons(done)["SUB001_MR"] == []


def test_a_refused_zip_falls_back_to_one_request_per_file(xnat, labelled, hooked):
    for i in range(4):
        add(xnat, labelled, i)
    hooked(answer(404)(lambda url: "format=zip" in url))
    done = build(xnat, labelled)
    assert done.reads["requests"] == 1 + 4 + 4
    assert reasons(done) == {f"SUB{i:03d}_MR": [] for i in range(4)}


@pytest.mark.parametrize("refusal", [404, 400, "empty"])
def test_without_the_project_wide_listing_sessions_are_listed_one_by_one(
    xnat, labelled, hooked, tmp_path, refusal
):
    for i in range(3):
        add(xnat, labelled, i)
    expected = list_sessions(xnat, labelled)
    empty = json.dumps({"ResultSet": {"Result": [], "totalRecords": "0"}}).encode()
    hook = answer(200, empty) if refusal == "empty" else answer(refusal)
    urls = []
    hooked(lambda response, *a, **k: urls.append(response.url))
    hooked(hook(lambda url: "/experiments/ALL/" in url))
    assert list_sessions(xnat, labelled) == expected
    # asked for resources (and, when not refused, files) of scans and assessors project-wide
    assert sum("/experiments/ALL/" in url for url in urls) == (4 if refusal == "empty" else 2)
    assert sum("/scans/ALL/files" in url and "/experiments/ALL/" not in url for url in urls) == 3
    build(xnat, labelled)
    fetched = fetch_dataset(xnat, labelled, "brain", tmp_path / "out", progress=False)
    assert fetched.files == 6


def test_no_access_for_a_session_shared_from_a_project_the_user_cannot_read(
    xnat_server, xnat, labelled
):
    """XNAT lists sessions shared into P with their own project; the embedded server does not
    share, so the listing's project column is rewritten on the way in for one session."""
    for i in range(2):
        add(xnat, labelled, i)
    xnat_server.add_user("dsmember", "secret-pw-2", labelled, "Member")
    hidden = f"{labelled[:30]}_HID"  # another project, which dsmember may not read
    xnat.put(f"/data/projects/{hidden}")

    with connect(xnat_server.url, "dsmember", "secret-pw-2") as member:

        def shared(response, *args, **kwargs):
            if "imageSessionData" in response.url:
                body = response.json()
                for row in body["ResultSet"]["Result"]:
                    if row["label"] == "SUB001_MR":
                        row["project"] = hidden
                response._content = json.dumps(body).encode()

        member.interface.hooks["response"].append(shared)
        done = build(member, labelled, dry_run=True)
    xnat.delete(f"/data/projects/{hidden}")
    got = {row["session"]: row["reasons"] for row in done.build.report["sessions"]}
    assert [r["code"] for r in got["SUB001_MR"]] == ["no-access"]
    assert got["SUB000_MR"] == []


def test_missing_required_label(xnat, labelled):
    add(xnat, labelled, 0)
    only_grey = (LABELS == 1).astype("uint8")
    add(xnat, labelled, 1, labels=only_grey)
    definition = {**DEFINITION, "requiredLabels": ["Grey Matter", "White Matter"]}
    got = reasons(build(xnat, labelled, definition))
    assert got == {"SUB000_MR": [], "SUB001_MR": ["missing-required"]}


def test_server_zips_several_sessions_objects_at_once(xnat, labelled):
    """XNAT's comma lists, as `xnat-ml serve` answers them: ids of sessions and of their
    assessors, `ALL`, and an id that names nothing left out (as XNAT does for a GET)."""
    import io
    import zipfile

    ids = [add(xnat, labelled, i) for i in range(2)]
    for which in ("ALL", "R000,R001"):
        uri = f"/data/experiments/{','.join(ids)},NOSUCH/assessors/{which}/resources/LABELMAP/files"
        got = xnat.get(uri, query={"format": "zip"})
        names = sorted(zipfile.ZipFile(io.BytesIO(got.content)).namelist())
        assert names == [f"SUB00{i}_MR/assessors/R00{i}/resources/LABELMAP/files/labels.nii.gz"
                         for i in range(2)]  # fmt: skip
