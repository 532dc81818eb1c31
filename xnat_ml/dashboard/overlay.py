"""A mid-slice overlay PNG of an ROI collection's label map on its scan's image, read over REST.

The collection's LABELMAP resource holds its label NIfTI on the grid of the scan it was drawn
on (roi-to-mask and infer write it so); the image is the NIFTI resource of the session's scan
with that grid. The axial slice through the middle of the labelled voxels is drawn, labels in
colour over the image in grey.
"""

from __future__ import annotations

import io

import numpy as np
from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.xnat.queries import list_rows
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import segment

MAX_BYTES = 512 * 2**20  # a label or image NIfTI bigger than this is not drawn


def mid_slice_png(xnat: XNATSession, project: str, session_id: str, collection: str) -> bytes:
    base = f"/data/projects/{segment(project)}/experiments/{segment(session_id)}"
    what = f"ROI collection {collection} overlay"
    with reported_as(what):
        label = _first_nifti(xnat, f"{base}/assessors/{segment(collection)}/resources/"
                                   f"{LABELMAP_RESOURCE}", what)  # fmt: skip
        if label is None:
            raise XnatMlError(f"{what}: the collection has no {LABELMAP_RESOURCE} NIfTI yet")
        image = None
        for scan in list_rows(xnat, f"{base}/scans", columns="ID"):
            found = _first_nifti(xnat, f"{base}/scans/{segment(str(scan['ID']))}/resources/"
                                       f"{NIFTI_RESOURCE}", what)  # fmt: skip
            if found is not None and found.shape[:3] == label.shape[:3]:
                image = found
                break
    return _draw(np.asarray(label.dataobj), None if image is None else np.asarray(image.dataobj))


def _first_nifti(xnat: XNATSession, resource: str, what: str):
    import nibabel as nib

    answer = xnat.get(f"{resource}/files", query={"format": "json"},
                      accepted_status=[200, 404])  # fmt: skip
    if answer.status_code == 404:
        return None
    rows = answer.json()["ResultSet"]["Result"]
    names = [r["Name"] for r in rows if str(r.get("Name", "")).endswith((".nii", ".nii.gz"))]
    if not names:
        return None
    data = xnat.get(f"{resource}/files/{segment(sorted(names)[0])}").content
    if len(data) > MAX_BYTES:
        raise XnatMlError(f"{what}: {names[0]} is too large to draw")
    try:
        return nib.Nifti1Image.from_bytes(_plain(data))
    except Exception as exc:  # nibabel raises many kinds for a broken file
        raise XnatMlError(f"{what}: {names[0]} is not a readable NIfTI ({exc})") from None


def _plain(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _draw(label: np.ndarray, image: np.ndarray | None) -> bytes:
    from PIL import Image

    label = label.reshape(label.shape[:3])
    zs = np.nonzero(label.any(axis=(0, 1)))[0]
    z = int(zs[len(zs) // 2]) if len(zs) else label.shape[2] // 2
    shown = label[:, :, z].T[::-1]
    if image is not None:
        plane = image.reshape(image.shape[:3])[:, :, z].T[::-1].astype(float)
        low, high = np.percentile(plane, (1, 99)) if plane.size else (0, 1)
        grey = np.clip((plane - low) / max(high - low, 1e-6), 0, 1) * 255
    else:
        grey = np.zeros(shown.shape)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    palette = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240]], float)  # fmt: skip
    for i, value in enumerate(v for v in np.unique(shown) if v):
        mask = shown == value
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * palette[i % len(palette)]
    picture = Image.fromarray(rgb.astype(np.uint8))
    scale = max(1, 256 // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
