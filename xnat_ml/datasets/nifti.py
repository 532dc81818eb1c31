"""NiftiInfo from NIfTI bytes: what an ``inspect`` callback returns, from whatever it fetched.

Grid checks need only the header, so a caller may pass just the first bytes of an image file
(gzipped or not: a truncated gzip stream decodes as far as it goes); label values need the
whole file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from xnat_ml.datasets.records import NiftiInfo
from xnat_ml.errors import XnatMlError

# sizeof_hdr, the first field, tells the version (and byte order) apart; nibabel would
# otherwise "fix" a NIfTI-2 header read as NIfTI-1 and return nonsense.
_NIFTI_BY_HEADER_SIZE = {
    size.to_bytes(4, order): klass
    for size, klass in ((348, nib.Nifti1Image), (540, nib.Nifti2Image))
    for order in ("little", "big")
}
HEADER_BYTES = 4096  # enough of a .nii.gz for any NIfTI-1/2 header; fetch this much for grids


def nifti_info(data: bytes, *, values: bool, source: str) -> NiftiInfo:
    """Shape and affine of a NIfTI image given as bytes, and its label values if asked."""
    if data[:2] == b"\x1f\x8b":
        decoder = zlib.decompressobj(wbits=31)
        try:
            data = decoder.decompress(data)
        except zlib.error as exc:
            raise XnatMlError(f"NIfTI file {source}: broken gzip data ({exc})") from None
    klass = _NIFTI_BY_HEADER_SIZE.get(data[:4])
    if klass is None:
        raise XnatMlError(f"NIfTI file {source}: not a NIfTI-1 or NIfTI-2 image")
    try:
        image = klass.from_bytes(data)
    except Exception as exc:  # nibabel raises assorted types for broken headers
        raise XnatMlError(f"NIfTI file {source}: header cannot be read ({exc})") from None
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    affine = tuple(tuple(float(x) for x in row) for row in image.affine)
    if not values:
        return NiftiInfo(shape, affine)
    try:
        array = np.asanyarray(image.dataobj)
    except Exception as exc:  # truncated data, bad dtype
        raise XnatMlError(f"NIfTI file {source}: voxel data cannot be read ({exc})") from None
    return NiftiInfo(shape, affine, _label_values(array, source))


def read_nifti_info(path: str | Path, *, values: bool) -> NiftiInfo:
    """``nifti_info`` of a local file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise XnatMlError(f"NIfTI file {path}: cannot be read ({exc.strerror})") from None
    return nifti_info(data, values=values, source=str(path))


def _label_values(array: np.ndarray, source: str) -> frozenset[int]:
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise XnatMlError(f"label file {source}: holds non-integer values")
        array = array.astype(np.int64)
    if array.size == 0:
        return frozenset()
    low, high = int(array.min()), int(array.max())
    if low >= 0 and high < 1 << 16:  # a histogram is far cheaper than sorting for np.unique
        return frozenset(int(v) for v in np.flatnonzero(np.bincount(array.ravel())))
    return frozenset(int(v) for v in np.unique(array))
