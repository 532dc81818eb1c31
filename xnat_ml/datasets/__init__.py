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

from xnat_ml.lazy import lazy_face

__getattr__, __all__ = lazy_face(__name__, {
    "build": ["Build", "Outcome", "build_dataset"],
    "datalist": ["dumps", "local_path", "localize", "previous_assignment", "uris"],
    "definition": ["Definition", "DefinitionError", "parse_definition"],
    "nifti": ["HEADER_BYTES", "nifti_info", "read_nifti_info"],
    "patterns": ["PatternError"],
    "reasons": ["Reason"],
    "records": ["FileEntry", "FileRef", "Inspect", "NiftiInfo", "Resource", "RoiCollection",
                "Scan", "Session"],
    "splits": ["assign_splits"],
})  # fmt: skip
