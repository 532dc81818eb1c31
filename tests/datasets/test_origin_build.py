"""Human and AI collections of one session, on the embedded server, as they will really be
stored: the sample RTSTRUCT converted by roi-to-mask (its LABELMAP and record say ``human``), and
an AI SEG (every segment AUTOMATIC, written by ``write_seg``) stored through ``/xapi/roi`` with
the LABELMAP and record that ``infer`` stores (``origin`` from ``collection_origin``). The second
session's RTSTRUCT is not converted, so its only label map is the AI one."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from xnat_ml.annotations.roi_to_mask import roi_to_mask
from xnat_ml.datasets.project_build import build_in_project
from xnat_ml.imaging.ai_collections import ai_collection_label, algorithm_name, collection_origin
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series
from xnat_ml.layout import DICOM_RESOURCE, LABELMAP_RESOURCE
from xnat_ml.sample.project import ROI_COLORS, build_sample_project
from xnat_ml.xnat import connect, download_resource, list_rows, upload_directory
from xnat_ml.xnat.roi import upload_roi_collection
from xnat_ml.xnat.uris import assessor_uri, resource_uri, scan_uri

PROJECT = "ORIGIN_DS"
SEGMENTS = {value: (name, colour) for value, (name, colour) in enumerate(ROI_COLORS.items(), 1)}


@dataclass(frozen=True)
class Site:
    human: dict[str, str]  # session id -> its converted RTSTRUCT collection's id (first only)
    ai: dict[str, str]  # session id -> its AI collection's id
    sessions: list[str]


def _collection_id(xs, session_id: str, label: str) -> str:
    rows = list_rows(xs, f"/data/experiments/{session_id}/assessors")
    return next(r["ID"] for r in rows if r["label"] == label)


@pytest.fixture(scope="module")
def site(xnat_server, tmp_path_factory) -> Site:
    tmp = tmp_path_factory.mktemp("origin")
    human, ai, ids = {}, {}, []
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as xs:
        for n, built in enumerate(build_sample_project(xs, PROJECT, subjects=2)):
            sid = built.session_id
            ids.append(sid)
            rts = _collection_id(xs, sid, built.roi_collection)
            download_resource(xs, resource_uri(assessor_uri(sid, rts), "RTSTRUCT"), tmp / f"rt{n}")
            out = tmp / f"labels{n}"
            done = roi_to_mask(xs, tmp / f"rt{n}", "RTSTRUCT", sid, PROJECT, out,
                               labelmap="region2MaskValueMap.txt")  # fmt: skip
            if n == 0:  # the job's output handler: LABELMAP on the collection
                upload_directory(xs, assessor_uri(sid, rts), LABELMAP_RESOURCE, out,
                                 format="NIFTI", content="labelmap")  # fmt: skip
                human[sid] = rts
            # the AI collection of model brain v1, stored as infer stores it
            dicom = tmp / f"dicom{n}"
            download_resource(xs, resource_uri(scan_uri(sid, done.scan_id), DICOM_RESOURCE), dicom)
            series = load_series(dicom, done.series_uid)
            labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj).astype(np.uint8)
            label = ai_collection_label("brain", 1, sid)
            seg = write_seg(labels, SEGMENTS, series, tmp / f"ai{n}.dcm", series_description=label,
                            algorithm_name=algorithm_name("brain", 1))  # fmt: skip
            upload_roi_collection(xs, PROJECT, sid, label, seg, "SEG")
            ai[sid] = _collection_id(xs, sid, label)
            record = tmp / f"ai-labels{n}"
            record.mkdir()
            shutil.copy(out / "labels.nii.gz", record / "labels.nii.gz")
            origin = collection_origin(seg, "SEG")
            (record / "masks.json").write_text(json.dumps({"origin": origin}))
            upload_directory(xs, assessor_uri(sid, ai[sid]), LABELMAP_RESOURCE, record,
                             format="NIFTI", content="labelmap")  # fmt: skip
    return Site(human, ai, ids)


def definition(**label) -> str:
    return json.dumps({
        "criteria": [{"payload": {
            "Images": {"tag": "image", "SeriesDescription": "T1w%", "ResourceLabel": "NIFTI"},
            "Labels": {"tag": "label", "Source": "roiCollection", **label}}}],
        "split": {"training": 100, "seed": 0},
    })  # fmt: skip


def build(xnat_server, cache: Path, **label):
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as xs:
        return build_in_project(xs, PROJECT, definition(**label), "tissues", dry_run=True,
                                cache=cache)  # fmt: skip


def label_collection(done, session_id: str) -> str | None:
    outcome = next(o for o in done.build.outcomes if o.session.id == session_id)
    return outcome.files["label"].source.id if outcome.included else None


def test_records_say_who_made_each_collection(site, xnat_server):
    http = xnat_server.session()
    first = site.sessions[0]
    for collection, origin in ((site.human[first], "human"), (site.ai[first], "ai")):
        uri = resource_uri(assessor_uri(first, collection), LABELMAP_RESOURCE)
        answer = http.get(f"{xnat_server.url}{uri}/files/masks.json")
        assert answer.status_code == 200 and answer.json()["origin"] == origin


def test_prefer_human_takes_the_human_collection(site, xnat_server, tmp_path):
    done = build(xnat_server, tmp_path / "cache", Prefer="human")
    first, second = site.sessions
    assert label_collection(done, first) == site.human[first]
    assert label_collection(done, second) == site.ai[second]  # nothing better there
    again = build(xnat_server, tmp_path / "cache", Prefer="human")  # origins and labels cached
    assert again.reads["requests"] == 0 and again.build.datalist == done.build.datalist
    ai = build(xnat_server, tmp_path / "cache", Prefer="ai")  # from the AI record
    assert label_collection(ai, first) == site.ai[first]
    plain = build(xnat_server, tmp_path / "plain")
    assert [r["code"] for r in plain.build.report["sessions"][0]["reasons"]] == [
        "several-matches"
    ]


def test_only_human_excludes_the_ai_only_session_with_a_reason(site, xnat_server, tmp_path):
    done = build(xnat_server, tmp_path / "cache", Origin="human")
    first, second = site.sessions
    assert label_collection(done, first) == site.human[first]
    row = next(r for r in done.build.report["sessions"] if r["sessionId"] == second)
    [reason] = row["reasons"]
    assert reason["code"] == "other-origin"
    assert reason["message"] == (
        f"label: no human ROI collection: ROI collection {site.ai[second]} "
        f"({ai_collection_label('brain', 1, second)}) LABELMAP/labels.nii.gz is ai"
    )
    assert "other-origin" in done.build.report_markdown()
    # the same reads as a definition that needs no origin and takes the same files
    same = build(xnat_server, tmp_path / "plain", CollectionType="RTSTRUCT")
    assert label_collection(same, first) == site.human[first]
    assert same.reads == done.reads
