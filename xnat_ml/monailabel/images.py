"""The project's images as MONAI Label's datastore names them: one per scan of an image
session, its id the scan's SeriesInstanceUID (what OHIF sends), ``SESSION_SCAN`` accepted too;
and the ROI collections drawn on each, under MONAI Label's tags (a person's ``final``, a
model's ``original``). Who made a collection is read from the record beside its label map
(``masks.json``'s ``origin``, taken from the SEG's segments: an AI collection an annotator
corrected and saved again in OHIF is a person's), else from the SEG's own segments (a model's
SEG gets no label map from roi-to-mask); RTSTRUCTs are drawn by people.

Two bulk listings per call, then one small read per SEG collection (docs/monailabel.md).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.datasets.definition import ORIGINS
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.ai_collections import collection_origin
from xnat_ml.imaging.mask_folder import INDEX_NAME
from xnat_ml.layout import LABELMAP_RESOURCE, ROI_COLLECTION_XSI
from xnat_ml.xnat import download_resource
from xnat_ml.xnat.queries import list_rows
from xnat_ml.xnat.uris import assessor_uri, resource_uri

_SCAN = "xnat:imageScanData"
_SCAN_COLUMNS = ("ID", "label", "subject_label", f"{_SCAN}/ID", f"{_SCAN}/type",
                 f"{_SCAN}/series_description", f"{_SCAN}/UID")  # fmt: skip
_ROI_COLUMNS = ("ID", "label", "imageSession_ID", f"{ROI_COLLECTION_XSI}/collectionType",
                f"{ROI_COLLECTION_XSI}/references/seriesUID")  # fmt: skip
FINAL, ORIGINAL = "final", "original"  # MONAI Label's tags: a person's label, a model's
READERS = 8  # label-map records read at once


class UnknownImage(XnatMlError):
    """No image of the project has that id (answered 404)."""


@dataclass(frozen=True)
class Image:
    id: str  # SeriesInstanceUID; SESSION_SCAN when the scan has none recorded
    session_id: str
    session_label: str
    subject_label: str
    scan_id: str
    scan_type: str
    series_description: str

    @property
    def alias(self) -> str:
        return f"{self.session_id}_{self.scan_id}"

    def info(self) -> dict[str, str]:
        return {"session": self.session_label, "session_id": self.session_id,
                "subject": self.subject_label, "scan": self.scan_id, "type": self.scan_type,
                "series_description": self.series_description, "alias": self.alias}  # fmt: skip


@dataclass(frozen=True)
class Collection:
    id: str
    label: str
    session_id: str
    series_uid: str
    collection_type: str
    origin: str = ""  # its label map record's: human, ai or mixed; "" without one

    @property
    def tag(self) -> str:
        """A person's (RTSTRUCT, or every SEG segment MANUAL/SEMIAUTOMATIC), else a model's."""
        return FINAL if self.collection_type == "RTSTRUCT" or self.origin == "human" else ORIGINAL


def list_images(session: XNATSession, project: str) -> list[Image]:
    """Every scan of the project's image sessions, in session then scan order."""
    rows = list_rows(session, "/data/experiments", project=project,
                     xsiType="xnat:imageSessionData", columns=",".join(_SCAN_COLUMNS))  # fmt: skip
    images = []
    for row in rows:
        row = {str(k).lower(): "" if v is None else str(v) for k, v in row.items()}
        scan = row.get(f"{_SCAN}/id".lower(), "")
        if not scan:
            continue
        session_id = row.get("id", "")
        uid = row.get(f"{_SCAN}/uid".lower(), "")
        images.append(Image(uid or f"{session_id}_{scan}", session_id,
                            row.get("label", "") or session_id, row.get("subject_label", ""),
                            scan, row.get(f"{_SCAN}/type".lower(), ""),
                            row.get(f"{_SCAN}/series_description".lower(), "")))  # fmt: skip
    return images


def find_image(images: list[Image], ref: str) -> Image:
    """The image whose id or ``SESSION_SCAN`` alias is ``ref``."""
    for image in images:
        if ref in (image.id, image.alias):
            return image
    raise UnknownImage(f"image {ref[:200]!r}: no scan of the project has that id")


def list_collections(session: XNATSession, project: str) -> list[Collection]:
    rows = list_rows(session, "/data/experiments", project=project, xsiType=ROI_COLLECTION_XSI,
                     columns=",".join(_ROI_COLUMNS))  # fmt: skip
    found = []
    for row in rows:
        row = {str(k).lower(): "" if v is None else str(v) for k, v in row.items()}
        xsi = ROI_COLLECTION_XSI.lower()
        found.append(Collection(
            row.get("id", ""), row.get("label", ""),
            row.get("imagesession_id") or row.get("session_id", ""),
            row.get(f"{xsi}/references/seriesuid") or row.get("seriesuid", ""),
            row.get(f"{xsi}/collectiontype") or row.get("collectiontype", ""),
        ))  # fmt: skip
    segs = [i for i, c in enumerate(found) if c.collection_type == "SEG"]
    with ThreadPoolExecutor(READERS) as pool:
        origins = pool.map(lambda i: _origin(session, found[i]), segs)
        for i, origin in zip(segs, list(origins), strict=True):
            found[i] = replace(found[i], origin=origin)
    return found


def _origin(session: XNATSession, collection: Collection) -> str:
    """The ``origin`` its label map's record gives (roi-to-mask and infer write it), else what
    the SEG's segments say; "" when neither can be read."""
    collection_uri = assessor_uri(collection.session_id, collection.id)
    answer = session.get(f"{resource_uri(collection_uri, LABELMAP_RESOURCE)}/files/{INDEX_NAME}",
                         accepted_status=[200, 404])  # fmt: skip
    if answer.status_code == 200:
        try:
            origin = json.loads(answer.content).get("origin", "")
        except (ValueError, AttributeError):
            origin = ""
        if origin in ORIGINS:
            return origin
    with scratch.temporary("monailabel-seg-") as tmp:
        try:
            files = download_resource(session, resource_uri(collection_uri, "SEG"), Path(tmp))
            origins = {collection_origin(path, "SEG") for path in files}
        except XnatMlError:
            return ""
    return origins.pop() if len(origins) == 1 else ""


def labels_by_image(images: list[Image], collections: list[Collection]) -> dict[str, dict]:
    """Image id -> tag -> the collections of that tag drawn on it."""
    by_uid = {image.id: image for image in images}
    out: dict[str, dict] = {image.id: {} for image in images}
    for c in collections:
        image = by_uid.get(c.series_uid)
        if image is not None and image.session_id == c.session_id:
            out[image.id].setdefault(c.tag, []).append(c)
    return out


def datastore_json(project: str, images: list[Image], labels: dict[str, dict]) -> dict:
    """``GET /datastore/?output=all``: MONAI Label's datastore model."""
    objects = {}
    for image in images:
        tags = {tag: {"ext": ".nrrd", "info": {"collections": [
            {"id": c.id, "label": c.label, "type": c.collection_type} for c in found]}}
            for tag, found in labels[image.id].items()}  # fmt: skip
        objects[image.id] = {"image": {"ext": ".nii.gz", "info": image.info()}, "labels": tags}
    return {"name": project, "description": f"XNAT project {project}", "images_dir": "",
            "labels_dir": "labels", "objects": objects}  # fmt: skip


def datastore_stats(images: list[Image], labels: dict[str, dict]) -> dict:
    """``GET /datastore/?output=stats``: totals, as MONAI Label counts them."""
    tags: dict[str, int] = {}
    for found in labels.values():
        for tag in found:
            tags[tag] = tags.get(tag, 0) + 1
    completed = sum(1 for found in labels.values() if FINAL in found)
    return {"total": len(images), "completed": completed, "label_tags": tags}
