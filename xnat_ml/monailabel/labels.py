"""``PUT /datastore/label``: an annotator's label volume becomes a human DICOM SEG ROI
collection on its scan (segments MANUAL, named by the project's models' label maps), one per
user and scan (``ML_<user>_<session>_<scan>``), replaced by that user's next save. The Event
Service's roi-to-mask then makes its label map as for any other collection.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import parse_text_labelmap
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.monailabel.images import Image, list_collections
from xnat_ml.monailabel.scans import scan_image
from xnat_ml.monailabel.volumes import read_uploaded
from xnat_ml.xnat.roi import upload_roi_collection

MAX_LABEL = 64  # XNAT's ROI collection label length
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def collection_label(user: str, image: Image) -> str:
    """``ML_<user>_<session>_<scan>``, made safe for XNAT and cut with a hash when too long."""
    label = f"ML_{user}_{image.session_label}_{image.scan_id}"
    safe = _UNSAFE.sub("-", label)
    if safe == label and len(label) <= MAX_LABEL:
        return label
    digest = hashlib.sha256(f"{user}\n{image.session_id}\n{image.scan_id}".encode()).hexdigest()
    return f"{safe[: MAX_LABEL - 11]}_{digest[:10]}"


def segments_of(label_names: dict[str, int]) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """{value: (name, colour)} for the SEG, from /info/'s label names."""
    text = "".join(f"{name}={value}\n" for name, value in label_names.items())
    return parse_text_labelmap(text, "the project's model labels").segments()


def save_label(
    session: XNATSession, xnat_url: str, project: str, user: str, image: Image, upload: Path,
    label_names: dict[str, int], work: Path,
) -> tuple[str, str]:  # fmt: skip
    """Store the uploaded label file as the user's collection on the image's scan: (its
    assessor id, its label)."""
    _, series = scan_image(session, xnat_url, image)
    labels = read_uploaded(upload, series, work)
    if not labels.any():
        raise XnatMlError(f"label of image {image.id}: holds no labelled voxel")
    label = collection_label(user, image)
    seg = write_seg(labels, segments_of(label_names), series, work / "label.dcm",
                    algorithm_name="MONAI Label annotation", manual=True,
                    series_description=label)  # fmt: skip
    exists = any(c.label == label for c in list_collections(session, project))
    collection = upload_roi_collection(session, project, image.session_id, label, seg, "SEG",
                                       overwrite=exists)  # fmt: skip
    return collection, label
