"""Label array in a series grid → DICOM SEG (BINARY) referencing that series, via highdicom.

Model output goes back to XNAT as a SEG so the XNAT OHIF viewer shows it over the source images.
Its loader reads BINARY (not LABELMAP), uncompressed SEGs of the source series' study, places
frames by their per-frame source-image references and segment identification, and misplaces
segments when frames are missing; so every frame is written, empty or not, and the segments are
exclusive by construction (one label value per voxel). Segments are numbered 1..n in ascending
label value (SEG requires contiguous numbers; label maps such as ``Liver=10, Spleen=20`` are
not), named by SegmentLabel, coloured by the label map, and marked AUTOMATIC with an AI
algorithm identification unless written as MANUAL annotations (saves of corrected labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xnat_ml import __version__
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.derived import save_atomically, source_header
from xnat_ml.imaging.series import Series

# Generic codes: the label name carries the meaning; a label map may later carry SNOMED codes.
PROPERTY_CATEGORY = codes.SCT.Tissue
PROPERTY_TYPE = codes.SCT.Tissue
# Type 2 patient/study attributes the SEG copies from its source: de-identified series often
# lack them, and highdicom needs each present (empty is valid DICOM).
COPIED_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                "StudyID", "StudyDate", "StudyTime")


def write_seg(
    labels: np.ndarray,
    segments: Mapping[int, tuple[str, tuple[int, int, int]]],
    series: Series,
    out_path: str | Path,
    *,
    algorithm_name: str = "xnat-ml",
    algorithm_version: str = __version__,
    manual: bool = False,
    series_description: str = "xnat-ml segmentation",
) -> Path:
    """Write ``labels`` (unsigned ints of ``series.shape``; 0 = background) as a BINARY SEG.

    ``segments`` maps each label value to ``(name, (r, g, b))``; every non-zero value present in
    ``labels`` must have one. Values without voxels still get a segment (an empty one), so a
    model's output always lists the same segments. For a model version, pass
    ``algorithm_name=ai_collections.algorithm_name(model, N)`` and the collection's label as
    ``series_description`` (the viewer lists collections by it).
    """
    labels = np.asarray(labels)
    if labels.shape != series.shape:
        raise XnatMlError(
            f"label array of shape {labels.shape}: does not match series grid {series.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise XnatMlError(f"label array: expected non-negative integers, got {labels.dtype}")
    present = {int(v) for v in np.unique(labels)} - {0}
    missing = present - set(segments)
    if missing:
        raise XnatMlError(f"label array: values {sorted(missing)} have no segment description")
    if not segments:
        raise XnatMlError(f"SEG {out_path}: no segments to write")
    values = sorted(segments)
    if values[0] < 1:
        raise XnatMlError(f"SEG {out_path}: segment value {values[0]} must be 1 or more")

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segments[value][0][:64],
            segmented_property_category=PROPERTY_CATEGORY,
            segmented_property_type=PROPERTY_TYPE,
            algorithm_type="MANUAL" if manual else "AUTOMATIC",
            algorithm_identification=None if manual else algorithm,
            tracking_id=f"label {value}",
            tracking_uid=generate_uid(),
            display_color=hd.color.CIELabColor.from_rgb(*segments[value][1]),
        )
        for number, value in enumerate(values, start=1)
    ]
    # Label-map style input (one array, segment numbers as values) is several times faster in
    # highdicom than one stacked array per segment; frames first: (slices, rows, columns).
    size = max(int(labels.max(initial=0)), values[-1]) + 1
    numbering = np.zeros(size, dtype=np.uint8 if len(values) < 256 else np.uint16)
    numbering[values] = np.arange(1, len(values) + 1)
    numbered = numbering[labels].transpose(2, 1, 0)
    sources = [source_header(path) for path in series.files]
    for keyword in COPIED_TYPE2:
        if keyword not in sources[0]:
            setattr(sources[0], keyword, "")
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=numbered,
            segmentation_type="BINARY",
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=9100 + int(sources[0].get("SeriesNumber", 0) or 0) % 100,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="xnat-ml",
            manufacturer_model_name=algorithm_name,
            software_versions=__version__,
            device_serial_number="0",
            series_description=series_description[:64],
            content_label="SEGMENTATION",
            content_description=series_description[:64],
            transfer_syntax_uid=ExplicitVRLittleEndian,  # uncompressed, as the viewer loads it
            omit_empty_frames=False,  # gaps misplace segments in the viewer
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise XnatMlError(f"SEG {out_path}: highdicom refused the segmentation ({exc})") from exc
    return save_atomically(seg, out_path)
