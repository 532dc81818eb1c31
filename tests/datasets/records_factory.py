"""Made-up session records and a fake ``inspect`` for the dataset core's tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from xnat_ml.datasets import FileEntry, FileRef, NiftiInfo, Resource, RoiCollection, Scan, Session

IDENTITY = tuple(tuple(float(i == j) for j in range(4)) for i in range(4))
GRID = (8, 8, 4)

LABELMAP_TEXT = "liver=1\nspleen=2\n"

DEFINITION = {
    "criteria": [
        {
            "resolver": "TaggedResourceMap",
            "payload": {
                "Images": {
                    "tag": "image",
                    "SeriesDescription": ["T1%"],
                    "ResourceLabel": ["NIFTI"],
                },
                "Labels": {"tag": "label", "Source": "roiCollection"},
            },
        }
    ],
    "split": {"training": 70, "validation": 20, "testing": 10, "seed": 0},
}


def nifti(label: str = "NIFTI", *names: str) -> Resource:
    return Resource(
        label, format="NIFTI", files=tuple(FileEntry(n) for n in names or ("t1.nii.gz",))
    )


def scan(scan_id: str, kind: str = "T1w", uid: str = "", *resources: Resource, **kw) -> Scan:
    return Scan(
        scan_id,
        type=kind,
        series_description=kw.pop("series_description", kind),
        uid=uid or f"1.2.826.{scan_id}",
        resources=resources or (nifti(),),
        **kw,
    )


def roi(
    roi_id: str, series_uid: str, kind: str = "SEG", name: str = "", files=("labels.nii.gz",),
    origin: str = "",
) -> RoiCollection:  # fmt: skip
    return RoiCollection(
        roi_id,
        label=roi_id,
        name=name or roi_id,
        collection_type=kind,
        series_uid=series_uid,
        resources=(Resource("LABELMAP", format="NIFTI", files=tuple(FileEntry(f) for f in files)),),
        origin=origin,
    )


def session(n: int, subject: str = "", scans=None, rois=None, accessible: bool = True) -> Session:
    subject = subject or f"SUB{n:04d}"
    scans = scans if scans is not None else (scan("1", uid=f"1.2.826.{n}.1"),)
    rois = rois if rois is not None else (roi(f"ROI{n}", scans[0].uid if scans else ""),)
    return Session(
        project="P1",
        subject_id=f"XNAT_S{subject}",
        subject_label=subject,
        id=f"XNAT_E{n:05d}",
        label=f"{subject}_MR{n}",
        accessible=accessible,
        scans=tuple(scans),
        roi_collections=tuple(rois),
    )


@dataclass
class FakeInspect:
    """``inspect`` over made-up headers: by URI, else a default grid and label values."""

    infos: dict[str, NiftiInfo] = field(default_factory=dict)
    label_values: frozenset[int] = frozenset({0, 1})
    calls: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, ref: FileRef, values: bool) -> NiftiInfo:
        self.calls.append((ref.uri, values))
        if ref.uri in self.infos:
            return self.infos[ref.uri]
        return NiftiInfo(GRID, IDENTITY, self.label_values if values else None)
