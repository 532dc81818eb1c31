"""The SEG a model version's output goes back as: what the XNAT OHIF viewer's loader needs, valid
by dciodvfy, read back by highdicom and by `xnat-ml convert seg` exactly as written.

Round trip: label NIfTI in the series grid → `write_seg` → dciodvfy (no errors) → highdicom
(segment names, AUTOMATIC, AI algorithm `<model> v<N>`) → `xnat-ml convert seg --labelmap` →
labels.nii.gz equal to the label NIfTI voxel for voxel. On the sample project's T1w series
(slightly oblique, the anatomy the quality benchmark trains on) and on synthetic series: axial
with an empty slice, oblique non-axial, sagittal.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_factory import write_series
from pydicom.uid import ExplicitVRLittleEndian

from xnat_ml.cli import main
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.ai_collections import (
    MAX_LABEL,
    ai_collection_label,
    algorithm_name,
    collection_origin,
)
from xnat_ml.imaging.labelmap import read_labels
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import as_nifti, load_series, save_nifti

pytestmark = pytest.mark.timeout(300)

SEGMENTS = {10: ("Grey Matter", (128, 128, 128)), 20: ("White Matter", (250, 250, 250)),
            30: ("Lesion", (255, 0, 0))}  # fmt: skip  (Lesion: described, never present)
LABELMAP = "Grey Matter=10\nWhite Matter=20\nLesion=30\n"
DCIODVFY = shutil.which("dciodvfy") or str(Path(sys.executable).with_name("dciodvfy"))


def _sample_series(folder: Path):
    from xnat_ml.sample.anatomy import load_anatomy
    from xnat_ml.sample.dicom_series import T1W
    from xnat_ml.sample.dicom_series import write_series as write_sample_series
    from xnat_ml.sample.project import annotator_masks
    from xnat_ml.sample.subjects import make_subject, render

    subject = make_subject(0)
    volumes = render(subject, load_anatomy(), "T1w")
    write_sample_series(volumes, subject, T1W, "SEGTEST", folder)
    masks = annotator_masks(volumes)
    labels = np.zeros(volumes.image.shape, np.uint8)
    labels[masks["Grey Matter"]] = 10
    labels[masks["White Matter"]] = 20
    return load_series(folder), labels


def _synthetic_series(folder: Path, geometry: str):
    orientation = {"axial": (1, 0, 0, 0, 1, 0), "oblique": (0.8, 0.6, 0, 0, 0, -1),
                   "sagittal": (0, 1, 0, 0, 0, -1)}[geometry]  # fmt: skip
    write_series(folder, rows=14, columns=18, slices=7, pixel_spacing=(0.8, 1.2),
                 slice_spacing=2.5, orientation=orientation, shuffle_names=True,
                 instance_numbers="random")  # fmt: skip
    series = load_series(folder)
    labels = np.zeros(series.shape, np.uint8)
    labels[2:12, 3:10, 1:6] = 10
    labels[5:8, 4:7, 2:4] = 20
    labels[:, :, 3] = 0  # an empty slice between labelled ones
    return series, labels


@pytest.fixture(scope="module", params=["sample", "axial", "oblique", "sagittal"])
def written(request, tmp_path_factory):
    """(series, labels, label NIfTI, SEG path, collection label) per geometry."""
    folder = tmp_path_factory.mktemp(f"seg-{request.param}")
    if request.param == "sample":
        series, labels = _sample_series(folder / "dicom")
    else:
        series, labels = _synthetic_series(folder / "dicom", request.param)
    nifti = save_nifti(as_nifti(labels, series), folder / "prediction.nii.gz")
    label = ai_collection_label("tissue-unet", 3, "SESSION_01")
    seg = write_seg(read_labels(nifti, series), SEGMENTS, series, folder / "seg.dcm",
                    algorithm_name=algorithm_name("tissue-unet", 3), algorithm_version="3",
                    series_description=label)  # fmt: skip
    return series, labels, nifti, seg, label


@pytest.mark.skipif(not Path(DCIODVFY).exists(), reason="dicom3tools (dev extra) not installed")
def test_dciodvfy_finds_no_errors(written):
    *_, seg, _ = written
    result = subprocess.run([DCIODVFY, "-new", str(seg)], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    report = result.stdout + result.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report


def test_what_the_viewer_loads(written):
    series, labels, _, seg_path, label = written
    ds = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesDescription == label
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series.series_uid
    # every frame kept (empty slices and the empty segment too), each naming its source slice
    # and its segment, and no voxel in two segments
    slices = series.shape[2]
    assert ds.NumberOfFrames == slices * len(SEGMENTS)
    by_segment = {}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        (source_image,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert source_image.ReferencedSOPInstanceUID in series.sop_instance_uids
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        by_segment.setdefault(number, []).append(source_image.ReferencedSOPInstanceUID)
    assert {n: len(set(uids)) for n, uids in by_segment.items()} == {1: slices, 2: slices,
                                                                      3: slices}  # fmt: skip
    frames = ds.pixel_array.reshape(len(SEGMENTS), slices, *ds.pixel_array.shape[-2:])
    assert frames.sum(axis=0).max() <= 1


def test_highdicom_reads_names_and_ai_algorithm(written):
    *_, seg_path, _ = written
    seg = hd.seg.segread(seg_path)
    assert [seg.get_segment_description(n).segment_label for n in (1, 2, 3)] == [
        "Grey Matter", "White Matter", "Lesion"]  # fmt: skip
    for number in (1, 2, 3):
        description = seg.get_segment_description(number)
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = description.algorithm_identification
        assert algorithm[0].AlgorithmName == "tissue-unet v3"
        assert algorithm[0].AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert collection_origin(seg_path, "SEG") == "ai"


def test_convert_seg_gives_back_the_label_nifti_voxel_for_voxel(written, tmp_path):
    series, labels, nifti, seg_path, _ = written
    (tmp_path / "map.txt").write_text(LABELMAP)
    out = tmp_path / "out"
    argv = ["convert", "seg", str(seg_path), "--series", str(series.files[0].parent),
            "--out", str(out), "--labelmap", str(tmp_path / "map.txt")]  # fmt: skip
    assert main(argv) == 0
    back = nib.load(out / "labels.nii.gz")
    original = nib.load(nifti)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-4)


def test_manual_seg_is_human(tmp_path):
    write_series(tmp_path / "ct", rows=6, columns=8, slices=3)
    series = load_series(tmp_path / "ct")
    labels = np.zeros(series.shape, np.uint8)
    labels[1:3, 1:3, 1] = 1
    path = write_seg(labels, {1: ("Liver", (1, 2, 3))}, series, tmp_path / "s.dcm", manual=True)
    segment = pydicom.dcmread(path).SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "MANUAL"
    assert "SegmentationAlgorithmIdentificationSequence" not in segment
    assert collection_origin(path, "SEG") == "human"
    ds = pydicom.dcmread(path)
    ds.SegmentSequence[0].SegmentAlgorithmType = "SEMIAUTOMATIC"
    ds.save_as(tmp_path / "semi.dcm")
    assert collection_origin(tmp_path / "semi.dcm", "SEG") == "human"
    ds.SegmentSequence.append(pydicom.Dataset())
    ds.SegmentSequence[1].SegmentAlgorithmType = "AUTOMATIC"
    ds.save_as(tmp_path / "mixed.dcm")
    assert collection_origin(tmp_path / "mixed.dcm", "SEG") == "mixed"
    assert collection_origin(tmp_path / "any.dcm", "RTSTRUCT") == "human"  # never opened
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(XnatMlError, match="junk.dcm: not a DICOM file"):
        collection_origin(tmp_path / "junk.dcm", "SEG")


def test_ai_collection_labels_are_xnat_labels():
    assert ai_collection_label("liver", 2, "S01_MR1") == "AI_liver_v2_S01_MR1"
    long = ai_collection_label("a" * 60, 12, "SESSION_WITH_A_LONG_LABEL")
    assert len(long) == MAX_LABEL and long.startswith("AI_aaaa")
    assert long != ai_collection_label("a" * 60, 12, "SESSION_WITH_A_LONG_LABEL2")
    dotted = ai_collection_label("liver.unet", 1, "S1")
    assert dotted.startswith("AI_liver-unet_v1_S1_")
    assert dotted != ai_collection_label("liver-unet", 1, "S1")
    for label in (long, dotted):
        assert all(c.isascii() and (c.isalnum() or c in "_-") for c in label)
