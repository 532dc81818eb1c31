"""Label volumes as MONAI Label's clients send and take them: NRRD (3D Slicer, OHIF) or NIfTI,
in a DICOM series' grid. XNAT-free: arrays and files in, arrays and files out.

NRRD files are written in LPS space with the series' own axes, so a viewer lays them over the
series without resampling; an uploaded one is read through its header's geometry and then
checked against the series grid like any other label image (imaging.labelmap.read_labels).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import read_labels
from xnat_ml.imaging.series import Series, as_nifti, save_nifti

EXTENSIONS = (".nrrd", ".nii.gz")
DTYPES = {"uint8": np.uint8, "uint16": np.uint16}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SPACES = {"left-posterior-superior": np.eye(4), "right-anterior-superior": _LPS_TO_RAS}


def write_labels(labels: np.ndarray, series: Series, path: Path, dtype: str = "uint8") -> Path:
    """``labels`` (the series' NIfTI array order) as ``path``: .nrrd or .nii.gz by its name."""
    if dtype not in DTYPES:
        raise XnatMlError(f"result_dtype {dtype!r}: not one of {', '.join(DTYPES)}")
    if labels.size and int(labels.max()) > np.iinfo(DTYPES[dtype]).max:
        raise XnatMlError(f"result_dtype {dtype}: too small for label value {int(labels.max())}")
    data = np.asarray(labels).astype(DTYPES[dtype])
    if path.name.endswith(".nii.gz"):
        return save_nifti(as_nifti(data, series), path)
    if path.suffix != ".nrrd":
        raise XnatMlError(f"result_extension of {path.name}: not one of {', '.join(EXTENSIONS)}")
    import nrrd

    lps = series.lps_affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,  # one row per array axis
        "space origin": lps[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    nrrd.write(str(path), data, header, index_order="F")
    return path


def read_uploaded(path: Path, series: Series, work: Path) -> np.ndarray:
    """An uploaded label file (NRRD or NIfTI, told apart by content) as an integer array in the
    series grid; a file of another grid, dimension or content is an XnatMlError."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic.startswith(b"NRRD"):
        path = _nrrd_as_nifti(path, series, work / "label.nii.gz")
    else:  # nibabel goes by the name: gzip'd NIfTI, else plain
        path = path.rename(work / ("label.nii.gz" if magic[:2] == b"\x1f\x8b" else "label.nii"))
    return read_labels(path, series)


def _nrrd_as_nifti(path: Path, series: Series, out: Path) -> Path:
    """The NRRD's voxels with its geometry as a NIfTI file; its header is checked first, so a
    header claiming a huge volume is refused before any voxel is read."""
    import nrrd

    try:
        with open(path, "rb") as handle:
            header = nrrd.read_header(handle)
    except Exception as exc:  # pynrrd raises NRRDError and assorted parsing errors
        raise XnatMlError(f"label NRRD: unreadable header ({_line(exc)})") from None
    sizes = [int(s) for s in np.atleast_1d(header.get("sizes", []))]
    if len(sizes) == 4 and sizes[0] == 1:
        sizes = sizes[1:]
    if len(sizes) != 3 or tuple(sizes) != series.shape:
        raise XnatMlError(f"label NRRD: sizes {sizes} are not the series grid "
                          f"{list(series.shape)}")  # fmt: skip
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _SPACES:
        raise XnatMlError(f"label NRRD: space {space!r} is not LPS or RAS")
    try:
        data, header = nrrd.read(str(path), index_order="F")
        directions = np.asarray(header["space directions"], dtype=float)[-3:]
        origin = np.asarray(header["space origin"], dtype=float)
    except Exception as exc:
        raise XnatMlError(f"label NRRD: unreadable ({_line(exc)})") from None
    data = data.reshape(series.shape)
    if directions.shape != (3, 3) or not np.all(np.isfinite(directions)):
        raise XnatMlError("label NRRD: its space directions are not a 3x3 matrix")
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = directions.T, origin
    ras = _LPS_TO_RAS @ (_SPACES[space] @ affine)
    nib.save(nib.Nifti1Image(data, ras), out)
    return out


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
