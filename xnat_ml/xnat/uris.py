"""REST paths of XNAT objects: the one grammar that builds and parses them.

Labels may hold spaces or unicode; an unquoted `/` or `?` in a label would silently address
another object, so each segment is percent-encoded on its own.

The grammar of an archive path, shared by the client, the Container Service's resolver and the
embedded server (`parse_path`, `ObjectPath`; OBJECT_PATTERN is the server's route converter):

    path    = ["/"] [("data" | "REST") "/"] ["archive/"] object
              ["/resources/" label ["/files/" file-path]] ["/"]
    object  = "projects/" P ["/subjects/" S] ["/" session]
            | "subjects/" S ["/" session]
            | session
    session = "experiments/" E [("/scans/" | "/assessors/") X]

so `/data/projects/P/subjects/S/experiments/E/scans/1/resources/DICOM/files/a/b.dcm`,
`/archive/experiments/XNAT_E00001/assessors/A` (the Container Service's form) and `/subjects/S`
all parse. Every name is one non-empty segment: not `.` or `..`, without control characters, at
most MAX_NAME characters, and (percent-decoded) without a slash; a file path is such segments
joined by `/`; the whole path is at most MAX_PATH characters. Anything else is a UriError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from xnat_ml.errors import XnatMlError

ROI_COLLECTION_TYPES = ("RTSTRUCT", "SEG", "AIM", "MEAS", "NIFTI")

# In XNAT's zip downloads each entry sits under ".../resources/<label>/files/"; the part after it
# is the file's path inside the resource.
_ZIP_ENTRY_PREFIX = re.compile(r"(?:^|/)resources/[^/]+/files/")
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote(safe="") leaves as is


def segment(value: str) -> str:
    """One path segment, percent-encoded (slashes included)."""
    value = str(value)
    if _UNRESERVED.fullmatch(value):  # the usual id or label: skip quote's slow path
        return value
    return quote(value, safe="")


def project_uri(project: str) -> str:
    return f"/data/projects/{segment(project)}"


def subject_uri(project: str, subject: str) -> str:
    return f"{project_uri(project)}/subjects/{segment(subject)}"


def experiment_uri(experiment_id: str) -> str:
    """A session or other experiment by its accession id (unique on the server)."""
    return f"/data/experiments/{segment(experiment_id)}"


def scan_uri(experiment_id: str, scan_id: str) -> str:
    return f"{experiment_uri(experiment_id)}/scans/{segment(scan_id)}"


def assessor_uri(experiment_id: str, assessor: str) -> str:
    return f"{experiment_uri(experiment_id)}/assessors/{segment(assessor)}"


def resource_uri(parent_uri: str, label: str) -> str:
    """A resource (by label) of any object: project, subject, session, scan or assessor."""
    return f"{parent_uri.rstrip('/')}/resources/{segment(label)}"


def roi_collection_uri(project: str, session_id: str, label: str) -> str:
    """Where the OHIF-XNAT plugin's REST API takes an ROI collection file (PUT)."""
    return (
        f"/xapi/roi/projects/{segment(project)}/sessions/{segment(session_id)}"
        f"/collections/{segment(label)}"
    )


def path_in_resource(zip_entry: str) -> str:
    """The path of a file inside its resource, given its entry name in a downloaded zip."""
    match = _ZIP_ENTRY_PREFIX.search(zip_entry)
    return zip_entry[match.end():] if match else zip_entry


# ----------------------------------------------------------------------------- the grammar

MAX_NAME = 255  # characters of one name (a file system's NAME_MAX)
MAX_PATH = 4096  # characters of a whole path (PATH_MAX)

_NAME = r"[^/]+"
_SESSION = rf"experiments/{_NAME}(?:/(?:scans|assessors|reconstructions)/{_NAME})?"
#: an archive object path below /data/ (or /data/archive/), e.g. projects/P/subjects/S
OBJECT_PATTERN = (
    rf"(?:projects/{_NAME}(?:/subjects/{_NAME}(?:/{_SESSION})?|/{_SESSION})?"
    rf"|subjects/{_NAME}(?:/{_SESSION})?|{_SESSION})"
)
_PATH = re.compile(
    rf"/?(?:(?:data|REST)/)?(?:archive/)?(?P<object>{OBJECT_PATTERN})"
    rf"(?:/resources/(?P<resource>{_NAME})(?:/files/(?P<file>.+))?)?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KINDS = {"projects": "Project", "subjects": "Subject", "experiments": "Experiment",
         "scans": "Scan", "assessors": "Assessor",
         "reconstructions": "Reconstruction"}  # fmt: skip


class UriError(XnatMlError):
    """A path that is not an archive path: `path` and the `problem`, in one line."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        shown = path if len(path) <= 80 else path[:80] + "..."
        super().__init__(f"{shown!r}: {problem}")


class UnsafeName(UriError):
    """A path of the grammar's shape with a name no object can have (`..`, a control
    character, a slash, too long): the `problem` names the kind of name, e.g. 'Scan label'."""


@dataclass(frozen=True)
class ObjectPath:
    """What an archive path names: the steps (collection, ID or label) from its top object,
    then perhaps a resource label and a file path inside that resource (names decoded)."""

    steps: tuple[tuple[str, str], ...]
    resource: str | None = None
    file: str | None = None

    @property
    def kind(self) -> str:
        """Project, Subject, Experiment, Scan, Assessor, Resource or File."""
        if self.file is not None:
            return "File"
        if self.resource is not None:
            return "Resource"
        return KINDS[self.steps[-1][0]]

    def owner(self) -> ObjectPath:
        """The archive object itself: a resource's or a file's path without those parts."""
        return ObjectPath(self.steps)

    def named(self, collection: str) -> str | None:
        """The name the path gives in `collection` (projects, subjects, ...), if any."""
        return next((name for coll, name in self.steps if coll == collection), None)

    def uri(self, root: str = "/data") -> str:
        """The path under `root` (/data, /archive or ""), every name quoted on its own."""
        parts = [f"{collection}/{segment(name)}" for collection, name in self.steps]
        if self.resource is not None:
            parts.append(f"resources/{segment(self.resource)}")
        if self.file is not None:
            parts.append("files/" + "/".join(segment(p) for p in self.file.split("/")))
        return f"{root}/{'/'.join(parts)}"


def parse_path(path: str, *, quoted: bool = True) -> ObjectPath:
    """The archive path `path` names, per the grammar above; UriError says why it is none
    (UnsafeName when only a name is wrong).

    `quoted`: each name is percent-encoded, as in a URI (decoded here); False for a path that
    is already decoded, as a web server hands a request's path to its routes."""
    if len(path) > MAX_PATH:
        raise UriError(path, f"longer than {MAX_PATH} characters")
    match = _PATH.fullmatch(path.removesuffix("/"))
    if match is None:
        raise UriError(path, "not an archive object path")
    parts = match["object"].split("/")
    steps = tuple(
        (coll, _name(path, f"{KINDS[coll]} label", raw, quoted))
        for coll, raw in zip(parts[::2], parts[1::2], strict=True)
    )
    resource = match["resource"] and _name(path, "Resource label", match["resource"], quoted)
    file = match["file"] and "/".join(
        _name(path, "file path", raw, quoted) for raw in match["file"].split("/")
    )
    return ObjectPath(steps, resource or None, file or None)


def _name(path: str, what: str, raw: str, quoted: bool) -> str:
    """One name of `path`, decoded if `quoted`; UnsafeName unless it can name something."""
    try:
        text = unquote(raw, errors="strict") if quoted else raw
    except UnicodeDecodeError:
        raise UnsafeName(path, f"{what} {raw!r} is not UTF-8 once decoded") from None
    if text in ("", ".", ".."):
        raise UnsafeName(path, f"{what} {text!r} is empty or a relative step")
    if len(text) > MAX_NAME:
        raise UnsafeName(path, f"{what} '{text[:20]}…' is longer than {MAX_NAME} characters")
    if "/" in text or "\\" in text:
        raise UnsafeName(path, f"{what} {text!r} holds a slash")
    if bad := _CONTROL.search(text):
        raise UnsafeName(path, f"{what} {text!r} holds control character U+{ord(bad[0]):04X}")
    return text
