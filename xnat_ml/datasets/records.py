"""The plain records the dataset core reads: what one bulk listing of a project yields.

The XNAT layer fills these from a few project-wide queries (sessions, scans, resources, files,
ROI collections); nothing here fetches anything. ``inspect`` is the one callback the core needs
for validation: given a candidate file it returns the NIfTI header facts (and, for label files,
the voxel values), however the caller obtains them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from xnat_ml.xnat.uris import assessor_uri, resource_uri, scan_uri, segment


@dataclass(frozen=True)
class FileEntry:
    """A file in a resource; ``name`` is its path inside the resource."""

    name: str
    size: int | None = None
    digest: str | None = None


@dataclass(frozen=True)
class Resource:
    label: str
    format: str = ""
    content: str = ""
    files: tuple[FileEntry, ...] = ()


@dataclass(frozen=True)
class Scan:
    id: str
    type: str = ""
    series_description: str = ""
    series_class: str = ""
    uid: str = ""  # SeriesInstanceUID: what an ROI collection refers to
    resources: tuple[Resource, ...] = ()


@dataclass(frozen=True)
class RoiCollection:
    """An ``icr:roiCollectionData`` assessor of the session."""

    id: str
    label: str = ""
    name: str = ""
    collection_type: str = ""  # RTSTRUCT, SEG, AIM, ...
    series_uid: str = ""  # the scan it was drawn on
    resources: tuple[Resource, ...] = ()
    origin: str = ""  # human, ai or mixed, as recorded beside its label map; "" not known


@dataclass(frozen=True)
class Session:
    """An image session and its subject; ``accessible`` is False when the user may not read it
    (a bulk listing shows such sessions in a shared project without their contents)."""

    project: str
    subject_id: str
    subject_label: str
    id: str
    label: str
    accessible: bool = True
    scans: tuple[Scan, ...] = ()
    roi_collections: tuple[RoiCollection, ...] = ()


@dataclass(frozen=True)
class FileRef:
    """One chosen file: where it sits in the archive, and what it came from."""

    session: Session
    source: Scan | RoiCollection
    resource: Resource
    file: FileEntry

    @cached_property
    def uri(self) -> str:
        """The file's archive URI (``/data/experiments/...``), each segment quoted."""
        if isinstance(self.source, Scan):
            parent = scan_uri(self.session.id, self.source.id)
        else:
            parent = assessor_uri(self.session.id, self.source.id)
        name = "/".join(segment(part) for part in self.file.name.split("/"))
        return f"{resource_uri(parent, self.resource.label)}/files/{name}"

    @property
    def describe(self) -> str:
        """Short human form for reports: ``scan 3 (T1w) NIFTI/t1.nii.gz``."""
        if isinstance(self.source, Scan):
            what = f"scan {self.source.id}"
            detail = self.source.series_description or self.source.type
        else:
            what = f"ROI collection {self.source.id}"
            detail = self.source.name or self.source.label
        detail = f" ({detail})" if detail else ""
        return f"{what}{detail} {self.resource.label}/{self.file.name}"


@dataclass(frozen=True)
class NiftiInfo:
    """What validation needs of a NIfTI file: its grid, and for label files its values."""

    shape: tuple[int, ...]
    affine: tuple[tuple[float, ...], ...]  # 4x4, voxel indices to scanner mm
    label_values: frozenset[int] | None = None  # None: only the header was read


# inspect(file, want_values) -> NiftiInfo. Called with want_values=True for label files only,
# so image files need no more than their header. Raise XnatMlError when the file is unusable.
Inspect = Callable[[FileRef, bool], NiftiInfo]
