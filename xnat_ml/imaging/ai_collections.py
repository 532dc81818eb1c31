"""AI and human ROI collections: the label an AI collection is stored under, and who made one.

XNAT refuses an ROI collection label used anywhere else in the project, longer than 64
characters, or with characters outside ``[A-Za-z0-9_-]``; a model version's collection on a
session is therefore named ``AI_<model>_v<N>_<session>``, made safe and unique by a hash when it
had to be changed. Whether a collection is a person's work is read from the DICOM itself (a
real XNAT keeps no extra assessor field): a SEG is human when every segment is MANUAL or
SEMIAUTOMATIC (an annotator's correction of an AI SEG saved by OHIF is MANUAL); an RTSTRUCT,
which OHIF and annotation tools write, counts as human.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.errors import InvalidDicomError

from xnat_ml.errors import XnatMlError

MAX_LABEL = 64  # XNAT's label length
HASH_CHARS = 10
HUMAN_ALGORITHM_TYPES = frozenset({"MANUAL", "SEMIAUTOMATIC"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

Origin = Literal["human", "ai", "mixed"]


def algorithm_name(model: str, version: int) -> str:
    """The SEG's AlgorithmName for a model version: ``<model> v<N>``."""
    return f"{model} v{version}"


def ai_collection_label(model: str, version: int, session: str) -> str:
    """``AI_<model>_v<N>_<session>``; past 64 characters or with characters XNAT refuses in a
    label, made safe, cut, and suffixed with a hash of the exact names (so two inputs that
    differ only in the replaced or cut part still get different labels)."""
    label = f"AI_{model}_v{version}_{session}"
    safe = _UNSAFE.sub("-", label)
    if safe == label and len(label) <= MAX_LABEL:
        return label
    digest = hashlib.sha256(f"{model}\n{version}\n{session}".encode()).hexdigest()[:HASH_CHARS]
    return f"{safe[: MAX_LABEL - HASH_CHARS - 1]}_{digest}"


def collection_origin(path: str | Path, collection_type: str) -> Origin:
    """``human`` (every SEG segment MANUAL or SEMIAUTOMATIC; any RTSTRUCT), ``ai`` (every
    segment AUTOMATIC) or ``mixed``, from the file's header."""
    if collection_type == "RTSTRUCT":
        return "human"
    if collection_type != "SEG":
        raise XnatMlError(f"ROI collection {path}: type {collection_type!r} is not SEG or RTSTRUCT")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SegmentSequence"])
    except InvalidDicomError:
        raise XnatMlError(f"SEG {path}: not a DICOM file") from None
    except Exception as exc:  # truncated or corrupt files: pydicom raises assorted types
        raise XnatMlError(f"SEG {path}: unreadable DICOM ({exc})") from None
    kinds = {str(s.get("SegmentAlgorithmType", "")) for s in ds.get("SegmentSequence", [])}
    if not kinds:
        raise XnatMlError(f"SEG {path}: describes no segments")
    if kinds <= HUMAN_ALGORITHM_TYPES:
        return "human"
    return "ai" if kinds == {"AUTOMATIC"} else "mixed"

