"""Distinct synthetic subjects made from one template by seeded, smooth, realistic changes.

Each subject is the template moved into a head of its own (scaling, rotation, position and a
smooth non-linear warp), imaged with its own scanner settings (gain, contrast, bias field,
noise) on an acquisition grid of its own (field of view, voxel size, orientation). Everything
comes from `numpy.random.default_rng([seed, index])`: same seed, same subject, bit for bit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from xnat_ml.sample.anatomy import Anatomy

# Centre of the brain in MNI space, LPS mm (MNI is RAS: x and y flip).
BRAIN_CENTRE_LPS = np.array([0.0, 18.0, 18.0])
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Grid:
    """An acquisition grid in patient LPS mm, in DICOM's terms.

    Voxel (i, j, k) is column i, row j of slice k, the array order `xnat_ml.imaging` uses.
    """

    rows: int
    columns: int
    slices: int
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns)
    slice_spacing: float
    row_cosine: np.ndarray  # direction of increasing column index i
    column_cosine: np.ndarray  # direction of increasing row index j
    origin: np.ndarray  # ImagePositionPatient of slice 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.columns, self.rows, self.slices)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    @cached_property
    def lps_affine(self) -> np.ndarray:
        affine = np.eye(4)
        affine[:3, 0] = self.row_cosine * self.pixel_spacing[1]
        affine[:3, 1] = self.column_cosine * self.pixel_spacing[0]
        affine[:3, 2] = self.normal * self.slice_spacing
        affine[:3, 3] = self.origin
        return affine

    def position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k."""
        return self.origin + k * self.slice_spacing * self.normal

    def points(self) -> np.ndarray:
        """LPS mm of every voxel centre, shape (columns, rows, slices, 3)."""
        i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in self.shape), indexing="ij")
        ijk = np.stack([i, j, k], axis=-1)
        return ijk @ self.lps_affine[:3, :3].T.astype(np.float32) + self.lps_affine[:3, 3]

    def resliced(self, slice_spacing: float) -> Grid:
        """The same block of the head covered with thicker (or thinner) slices."""
        extent = (self.slices - 1) * self.slice_spacing
        slices = int(extent // slice_spacing) + 1
        return Grid(
            self.rows, self.columns, slices, self.pixel_spacing, slice_spacing,
            self.row_cosine, self.column_cosine, self.origin,
        )  # fmt: skip


@dataclass(frozen=True)
class Protocol:
    """An acquisition a site might use: orientation, matrix and voxel size."""

    name: str
    row_cosine: tuple[float, float, float]
    column_cosine: tuple[float, float, float]
    rows: int
    columns: int
    slices: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float


def _tilted_axial(degrees: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Axial cosines tilted about the left-right axis (as planned along AC-PC)."""
    t = np.radians(degrees)
    return (1.0, 0.0, 0.0), (0.0, float(np.cos(t)), float(np.sin(t)))


# Cycled over subjects: square axial, non-square pixels, oblique, sagittal.
PROTOCOLS = (
    Protocol("axial", (1, 0, 0), (0, 1, 0), 112, 96, 80, (2.0, 2.0), 2.0),
    Protocol("axial-nonsquare", (1, 0, 0), (0, 1, 0), 96, 112, 72, (2.4, 1.8), 2.2),
    Protocol("oblique", *_tilted_axial(15.0), 112, 96, 80, (2.0, 2.0), 2.0),
    Protocol("sagittal", (0, 1, 0), (0, 0, -1), 112, 120, 72, (2.0, 2.0), 2.0),
)


@dataclass(frozen=True, eq=False)
class Subject:
    """Everything that makes one sample subject differ from the others."""

    seed: int
    index: int
    label: str
    session_label: str
    sex: str
    birth_date: dt.date
    study_date: dt.date
    protocol: Protocol
    grid: Grid
    scale: np.ndarray  # per axis, head size
    rotation: np.ndarray  # 3x3, head position in the scanner
    translation: np.ndarray  # mm
    warp_waves: np.ndarray  # (W, 3) wave vectors, rad/mm
    warp_phases: np.ndarray  # (W,)
    warp_amplitudes: np.ndarray  # (W, 3) mm
    gain: float
    gamma: float
    bias: np.ndarray  # (3,) linear bias field gradient, per mm
    noise: float  # noise sigma, as a fraction of gain

    def template_points(self, points_lps: np.ndarray) -> np.ndarray:
        """Where each subject point (LPS mm) comes from in the template (LPS mm)."""
        centred = points_lps - BRAIN_CENTRE_LPS - self.translation
        moved = (centred @ self.rotation) / self.scale + BRAIN_CENTRE_LPS  # R^T, then 1/scale
        phase = points_lps @ self.warp_waves.T + self.warp_phases
        return moved + np.sin(phase) @ self.warp_amplitudes


def make_subject(index: int, seed: int = 0) -> Subject:
    """Subject number `index` (0-based) of the sample drawn with `seed`."""
    rng = np.random.default_rng([seed, index])
    protocol = PROTOCOLS[index % len(PROTOCOLS)]
    rotation = Rotation.from_euler("xyz", rng.uniform(-6, 6, 3), degrees=True).as_matrix()
    translation = rng.uniform(-6, 6, 3)
    directions = rng.normal(size=(4, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = directions * (2 * np.pi / rng.uniform(80, 160, (4, 1)))
    amplitudes = rng.normal(size=(4, 3))
    amplitudes *= rng.uniform(1.5, 3.5, (4, 1)) / np.linalg.norm(amplitudes, axis=1, keepdims=True)
    grid = _grid(protocol, rng, BRAIN_CENTRE_LPS + translation)
    label = f"sub-{index + 1:02d}"
    study_date = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 365)))
    return Subject(
        seed=seed,
        index=index,
        label=label,
        session_label=f"{label}_MR1",
        sex=str(rng.choice(["F", "M"])),
        birth_date=study_date - dt.timedelta(days=int(rng.integers(20 * 365, 80 * 365))),
        study_date=study_date,
        protocol=protocol,
        grid=grid,
        scale=rng.uniform(0.92, 1.08, 3),
        rotation=rotation,
        translation=translation,
        warp_waves=waves,
        warp_phases=rng.uniform(0, 2 * np.pi, 4),
        warp_amplitudes=amplitudes,
        gain=float(rng.uniform(800, 1200)),
        gamma=float(rng.uniform(0.85, 1.15)),
        bias=rng.normal(size=3) * 0.0015,
        noise=float(rng.uniform(0.01, 0.025)),
    )


def _grid(protocol: Protocol, rng: np.random.Generator, centre: np.ndarray) -> Grid:
    """The protocol's grid, with its field of view shifted and resized a little."""
    row_cosine = np.array(protocol.row_cosine, dtype=float)
    column_cosine = np.array(protocol.column_cosine, dtype=float)
    normal = np.cross(row_cosine, column_cosine)
    slices = protocol.slices + int(rng.integers(-8, 9))
    rows = protocol.rows + 8 * int(rng.integers(-1, 2))
    columns = protocol.columns + 8 * int(rng.integers(-1, 2))
    centre = centre + rng.uniform(-8, 8, 3)
    half = (
        row_cosine * protocol.pixel_spacing[1] * (columns - 1)
        + column_cosine * protocol.pixel_spacing[0] * (rows - 1)
        + normal * protocol.slice_spacing * (slices - 1)
    ) / 2
    return Grid(
        rows, columns, slices, protocol.pixel_spacing, protocol.slice_spacing,
        row_cosine, column_cosine, np.round(centre - half, 4),
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class Volumes:
    """One subject rendered on one grid, in NIfTI array order (columns, rows, slices)."""

    grid: Grid
    image: np.ndarray  # uint16 MR signal
    grey_matter: np.ndarray  # probability
    white_matter: np.ndarray  # probability


def render(subject: Subject, anatomy: Anatomy, contrast: str = "T1w", grid: Grid | None = None):
    """The subject imaged with `contrast` (T1w or T2w) on `grid` (default: the subject's)."""
    grid = grid or subject.grid
    points = subject.template_points(grid.points().reshape(-1, 3))
    ras = points @ LPS_FROM_RAS.T
    inverse = np.linalg.inv(anatomy.affine)
    voxels = (ras @ inverse[:3, :3].T + inverse[:3, 3]).T

    def sample(volume: np.ndarray) -> np.ndarray:
        values = ndimage.map_coordinates(volume, voxels, order=1, cval=0.0, prefilter=False)
        return values.reshape(grid.shape).astype(np.float32)

    grey, white = sample(anatomy.grey_matter), sample(anatomy.white_matter)
    if contrast == "T1w":
        signal = np.clip(sample(anatomy.t1), 0, 1) ** subject.gamma
    elif contrast == "T2w":
        signal = 1.0 * sample(anatomy.csf) + 0.55 * grey + 0.3 * white
    else:
        raise ValueError(f"contrast {contrast!r} is not T1w or T2w")
    bias = 1.0 + (points - BRAIN_CENTRE_LPS) @ subject.bias
    signal = signal * bias.reshape(grid.shape) * subject.gain
    rng = np.random.default_rng([subject.seed, subject.index, *contrast.encode()])
    sigma = subject.noise * subject.gain
    real = signal + rng.normal(0, sigma, signal.shape)
    imaginary = rng.normal(0, sigma, signal.shape)
    magnitude = np.sqrt(real**2 + imaginary**2)  # Rician noise, as magnitude MR images have
    image = np.clip(np.rint(magnitude), 0, 4095).astype(np.uint16)
    return Volumes(grid, image, grey, white)
