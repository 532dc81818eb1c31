"""Datasets: definitions, matching, validation report, subject splits and MONAI datalists.

This is the XNAT-free core: plain records in (``records``), plain data out. The XNAT layer lists
a project into ``Session`` records, loads the label map, supplies ``inspect`` and stores what
``build_dataset`` returns::

    definition = parse_definition(text, "brain.json")
    build = build_dataset(definition, sessions, labelmap=labelmap, inspect=inspect,
                          previous=previous_assignment(last_datalist))
    build.report, build.report_markdown(), build.datalist   # report.json, report.md, dataset_0.json
    build.check(strict)                                      # raise if unusable

docs/datasets.md describes the definition format and every guarantee.
"""

from xnat_ml.datasets.build import Build, Outcome, build_dataset
from xnat_ml.datasets.datalist import dumps, local_path, localize, previous_assignment, uris
from xnat_ml.datasets.definition import Definition, DefinitionError, parse_definition
from xnat_ml.datasets.nifti import HEADER_BYTES, nifti_info, read_nifti_info
from xnat_ml.datasets.patterns import PatternError
from xnat_ml.datasets.reasons import Reason
from xnat_ml.datasets.records import (
    FileEntry,
    FileRef,
    Inspect,
    NiftiInfo,
    Resource,
    RoiCollection,
    Scan,
    Session,
)
from xnat_ml.datasets.splits import assign_splits

__all__ = [
    "HEADER_BYTES",
    "Build",
    "Definition",
    "DefinitionError",
    "FileEntry",
    "FileRef",
    "Inspect",
    "NiftiInfo",
    "Outcome",
    "PatternError",
    "Reason",
    "Resource",
    "RoiCollection",
    "Scan",
    "Session",
    "assign_splits",
    "build_dataset",
    "dumps",
    "local_path",
    "localize",
    "nifti_info",
    "parse_definition",
    "previous_assignment",
    "read_nifti_info",
    "uris",
]
