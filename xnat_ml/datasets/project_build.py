"""Build a dataset of a project on XNAT: list, inspect, build, and store it as a new version.

The split placement of the latest version is kept (``previous``) when the split spec is the
same; a build whose four files equal the latest version's makes no new version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml.bounded_json import load_json
from xnat_ml.datasets.build import Build, build_dataset
from xnat_ml.datasets.cache import InspectionCache, default_root
from xnat_ml.datasets.datalist import dumps, previous_assignment
from xnat_ml.datasets.definition import Definition, parse_definition
from xnat_ml.datasets.inspector import ArchiveInspector
from xnat_ml.datasets.matching import candidates, session_selected
from xnat_ml.datasets.records import Session
from xnat_ml.datasets.resolver import get_bytes, list_sessions, require_project
from xnat_ml.datasets.versions import (
    DATALIST_FILE,
    DEFINITION_FILE,
    REPORT_FILE,
    REPORT_MD_FILE,
    VERSION_FILES,
    Version,
    check_name,
    forget_lost_writes,
    list_versions,
    read_file,
    write_version,
)
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import LabelMap, parse_labelmap
from xnat_ml.xnat.uris import project_uri, resource_uri, segment


class BuildRefused(XnatMlError):
    """The build is unusable (no session in, or an exclusion with strict); ``build`` holds the
    report so that the caller can show it."""

    def __init__(self, message: str, build: Build) -> None:
        super().__init__(message)
        self.build = build


@dataclass(frozen=True)
class ProjectBuild:
    build: Build
    version: Version | None  # what was written; None on a dry run or with nothing changed
    latest: Version | None  # the newest version before this build
    contents: dict[str, str]  # the four files' text
    dry_run: bool = False
    reads: dict[str, int] | None = None  # what inspection cost: requests, from_cache, ...

    @property
    def unchanged(self) -> bool:
        """Nothing differs from the latest version, so none was written."""
        return self.version is None and not self.dry_run


def build_in_project(
    session: XNATSession,
    project: str,
    definition_text: str | bytes,
    name: str,
    *,
    source: str = "definition",
    dry_run: bool = False,
    strict: bool = False,
    cache: Path | None = None,
) -> ProjectBuild:
    """Build dataset ``name`` of ``project`` from a definition's JSON text; store a new
    version unless ``dry_run`` or nothing changed. Inspections are cached under ``cache``
    (default: the user's cache root)."""
    check_name(name)
    definition = parse_definition(definition_text, source)
    if definition.project and definition.project != project:
        raise XnatMlError(
            f"dataset definition {source}: written for project {definition.project}, "
            f"not {project}"
        )
    require_project(session, project)
    sessions = list_sessions(session, project)
    if not sessions:
        raise XnatMlError(f"project {project}: holds no image session to build dataset {name} of")
    labelmap = _labelmap(session, project, definition)
    latest = (list_versions(session, project).get(name) or [None])[-1]
    stored = {f: read_file(session, project, latest, f) for f in VERSION_FILES} if latest else {}
    previous = None
    if latest and parse_definition(stored[DEFINITION_FILE], "latest").split == definition.split:
        where = f"dataset {name} v{latest.number} {DATALIST_FILE}"
        previous = previous_assignment(load_json(stored[DATALIST_FILE], where))
    inspector = ArchiveInspector(session, InspectionCache(cache or default_root()))
    sessions = _with_origins(sessions, definition, inspector)
    matched = build_dataset(definition, sessions, labelmap=labelmap, previous=previous, name=name)
    inspector.prefetch(
        (outcome.files[tag.tag], tag is definition.label)
        for outcome in matched.outcomes
        if outcome.included
        for tag in definition.tags
    )
    build = build_dataset(definition, sessions, labelmap=labelmap, inspect=inspector,
                          previous=previous, name=name)  # fmt: skip
    contents = {
        DEFINITION_FILE: dumps(json.loads(definition_text)),
        DATALIST_FILE: dumps(build.datalist),
        REPORT_FILE: dumps(build.report),
        REPORT_MD_FILE: build.report_markdown(),
    }
    try:
        build.check(strict)
    except XnatMlError as exc:
        raise BuildRefused(str(exc), build) from None
    reads = {"requests": inspector.requests, "from_cache": inspector.from_cache,
             "from_records": inspector.from_records}  # fmt: skip
    if dry_run or contents == stored:
        if not dry_run:
            forget_lost_writes(session, project, name, contents)
        return ProjectBuild(build, None, latest, contents, dry_run, reads)
    version = write_version(session, project, name, contents)
    return ProjectBuild(build, version, latest, contents, reads=reads)


def _with_origins(
    sessions: list[Session], definition: Definition, inspector: ArchiveInspector
) -> list[Session]:
    """The sessions with their ROI collections' recorded origins, when a tag picks by origin
    (its candidates' records are read before matching; see ``ArchiveInspector.origins``)."""
    tags = [replace(t, origin=(), prefer="") for t in definition.tags if t.origin or t.prefer]
    if not tags:
        return sessions
    labels = [
        ref
        for s in sessions
        if s.accessible and session_selected(definition, s)
        for tag in tags
        for ref in candidates(s, tag, {scan.uid: scan for scan in s.scans if scan.uid})
    ]
    origins = inspector.origins(labels)
    return [
        replace(s, roi_collections=tuple(
            replace(roi, origin=origins.get((s.id, roi.id), roi.origin))
            for roi in s.roi_collections
        ))  # fmt: skip
        for s in sessions
    ]


def _labelmap(session: XNATSession, project: str, definition: Definition) -> LabelMap | None:
    if not definition.label or isinstance(definition.labelmap, LabelMap):
        return None
    resource, path = definition.labelmap.split("/", 1)
    uri = resource_uri(project_uri(project), resource) + "/files/" + "/".join(
        segment(part) for part in path.split("/")
    )
    data = get_bytes(session, uri, f"label map {definition.labelmap} of project {project}")
    return parse_labelmap(data, f"{project}:{definition.labelmap}")
