"""`make demo` runs `python -m xnat_ml.demo`: server up, subscription installed, sample built, the
roi-to-mask jobs it sets off waited for, everything listed, server down; a second run reuses all."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np

from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.server.process import ServerProcess
from xnat_ml.xnat import connect, download_resource, list_experiments, list_rows
from xnat_ml.xnat.uris import experiment_uri, resource_uri


def run_demo(data_dir) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "xnat_ml.demo", "--data", str(data_dir), "--subjects", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_runs_the_annotation_loop_and_stops_the_server(tmp_path):
    data_dir = tmp_path / "demo-data"
    out = run_demo(data_dir)
    assert "Event subscription 'ROI collection saved" in out and "': created" in out
    assert "Project SAMPLE: 1 subjects, 1 sessions" in out
    assert "T1w MPRAGE" in out and "T2w TSE" in out
    assert re.search(r"job 1 roi-to-mask-roi-collection: Complete in [\d.]+ s", out), out
    assert re.search(r"ROI collection sub-01_MR1_tissues .*LABELMAP: .*labels\.nii\.gz", out)
    assert "/resources/LABELMAP/files?format=zip" in out
    url = re.search(r'xnat\.connect\("(http://127\.0\.0\.1:(\d+))"', out)
    assert url, out
    with socket.socket() as probe:  # the server was stopped on exit
        assert probe.connect_ex(("127.0.0.1", int(url[2]))) != 0

    # What the demo printed is in the archive: the scan's NIfTI and a label map with grey (1)
    # and white matter (2) from the project's label map, on the NIfTI's grid.
    with ServerProcess(data_dir) as server, connect(server.url, "admin", "admin") as session:
        [row] = list_experiments(session, "SAMPLE")
        uri = experiment_uri(row["ID"])
        [roi] = list_rows(session, f"{uri}/assessors")
        made = download_resource(session, resource_uri(roi["URI"], LABELMAP_RESOURCE), tmp_path)
        labels = nib.load(next(p for p in made if p.name == "labels.nii.gz"))
        [t1w] = [s for s in list_rows(session, f"{uri}/scans") if s["type"] == "T1w MPRAGE"]
        [image_path] = download_resource(
            session, resource_uri(t1w["URI"], NIFTI_RESOURCE), tmp_path / "nifti"
        )
    values, counts = np.unique(np.asarray(labels.dataobj), return_counts=True)
    assert values.tolist() == [0, 1, 2] and counts.min() > 1000
    image = nib.load(image_path)
    assert image.shape == labels.shape
    np.testing.assert_allclose(image.affine, labels.affine, atol=1e-4)

    again = run_demo(data_dir)
    assert "sub-01: already in project SAMPLE, left as it is" in again
    assert "': unchanged" in again and "job 2" not in again
