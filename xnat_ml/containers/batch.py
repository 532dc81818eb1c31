"""Batches: one command over many sessions (or their scans, or ROI collections) at once.

A batch is chosen from one bulk listing of the project's sessions, narrowed with label patterns
(`PAT*`, fnmatch), subject patterns, explicit ids and scan types; it is launched in one
`/bulklaunch` call (XNAT's bulk launch; one launch per object where a server lacks it). The
batch record, `ML_BATCHES/<batch id>.json` in the project, lists every object with the container
launched for it, attempt by attempt, so that any XNAT can answer "which jobs belong to this
batch" and `rerun --failed` can relaunch exactly the failed subgroup.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.containers.installed import InstalledWrapper, find_wrapper, require_enabled
from xnat_ml.containers.xsitypes import context_matches
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import BATCHES_RESOURCE
from xnat_ml.xnat.queries import list_experiments, list_rows
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.transfer import upload_directory
from xnat_ml.xnat.uris import experiment_uri, project_uri, resource_uri, segment

FAILED_PREFIX = "Failed"  # Failed, Failed (Upload), Failed (Rejected), ...
SESSION_COLUMNS = ("ID", "label", "xsiType", "subject_label", "URI")


@dataclass(frozen=True)
class Selection:
    """Which objects of a project a batch runs on; every given criterion must hold."""

    sessions: Sequence[str] = ()  # session label patterns
    subjects: Sequence[str] = ()  # subject label patterns
    ids: Sequence[str] = ()  # session ids or labels, exact
    scan_types: Sequence[str] = ()  # scan type patterns (scan-level commands)

    def session_ok(self, row: dict[str, Any]) -> bool:
        label, subject = str(row.get("label", "")), str(row.get("subject_label", ""))
        return (
            (not self.sessions or any(fnmatchcase(label, p) for p in self.sessions))
            and (not self.subjects or any(fnmatchcase(subject, p) for p in self.subjects))
            and (not self.ids or row.get("ID") in self.ids or label in self.ids)
        )

    def scan_ok(self, scan_type: str) -> bool:
        return not self.scan_types or any(fnmatchcase(scan_type, p) for p in self.scan_types)

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items() if v}


def archive_uri(path: str) -> str:
    """`/data/x` → `/archive/x`: the form XNAT's launch UI and Event Service give root inputs."""
    return "/archive/" + path[len("/data/") :] if path.startswith("/data/") else path


@dataclass
class Target:
    """One object a batch launches on (`uri` in the /archive/... form)."""

    uri: str
    label: str

    def __post_init__(self) -> None:
        self.uri = archive_uri(self.uri)


@dataclass
class BatchRecord:
    id: str
    project: str
    command: str
    wrapper: str
    wrapper_id: int
    root_input: str
    inputs: dict[str, str]
    selection: dict[str, list[str]]
    created: str
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch-id": self.id,
            "project": self.project,
            "command": self.command,
            "wrapper": self.wrapper,
            "wrapper-id": self.wrapper_id,
            "root-input": self.root_input,
            "inputs": self.inputs,
            "selection": self.selection,
            "created": self.created,
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchRecord:
        try:
            return cls(
                id=data["batch-id"],
                project=data["project"],
                command=data["command"],
                wrapper=data["wrapper"],
                wrapper_id=int(data["wrapper-id"]),
                root_input=data["root-input"],
                inputs=dict(data.get("inputs") or {}),
                selection=dict(data.get("selection") or {}),
                created=data.get("created", ""),
                attempts=list(data.get("attempts") or []),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise XnatMlError(f"batch record: malformed ({exc})") from None

    def latest_items(self) -> dict[str, dict[str, Any]]:
        """Per object URI, its item in the most recent attempt that included it."""
        latest: dict[str, dict[str, Any]] = {}
        for attempt in self.attempts:
            for item in attempt.get("items", []):
                latest[item["uri"]] = item
        return latest

    def job_keys(self) -> set[str]:
        """Every job this batch launched, as `job_keys_of` names them."""
        return {key for attempt in self.attempts for item in attempt.get("items", [])
                for key in _item_keys(item)}  # fmt: skip


def job_keys_of(container: dict[str, Any]) -> set[str]:
    """How a container is recognised: its id, and its workflow id (a real XNAT queues bulk
    launches and may answer with the workflow id only; the container carries it later)."""
    keys = {f"id:{container.get('id')}"}
    if container.get("workflow-id"):
        keys.add(f"workflow:{container['workflow-id']}")
    return keys


def _item_keys(item: dict[str, Any]) -> set[str]:
    keys = set()
    if item.get("container") is not None:
        keys.add(f"id:{item['container']}")
    if item.get("workflow-id"):
        keys.add(f"workflow:{item['workflow-id']}")
    return keys


# ----------------------------------------------------------------------------- selection


def select_targets(
    session: XNATSession, project: str, wrapper: InstalledWrapper, selection: Selection
) -> list[Target]:
    """The objects of `project` the wrapper would run on, from one bulk session listing.

    Scan- and assessor-level wrappers need each selected session's scans or assessors: one
    listing per selected session (sessions are narrowed first, so a pattern keeps this small).
    """
    kind = wrapper.root_type
    if kind == "Project":
        return [Target(project_uri(project), project)]
    rows = [
        r
        for r in list_experiments(session, project, columns=SESSION_COLUMNS)
        if selection.session_ok(r)
    ]
    if kind in ("Session", "SubjectAssessor"):
        return [
            Target(experiment_uri(r["ID"]), r["label"])
            for r in rows
            if _in_context(wrapper, r.get("xsiType"))
        ]
    if kind == "Subject":
        subjects = {r["subject_label"] for r in rows if r.get("subject_label")}
        return [
            Target(f"{project_uri(project)}/subjects/{segment(s)}", s) for s in sorted(subjects)
        ]
    if kind in ("Scan", "Assessor"):
        child = "scans" if kind == "Scan" else "assessors"
        targets = []
        for r in rows:
            for c in list_rows(session, f"{experiment_uri(r['ID'])}/{child}"):
                cid = str(c.get("ID") or c.get("id") or "")
                if not cid or not _in_context(wrapper, c.get("xsiType") or c.get("xsi_type")):
                    continue
                if kind == "Scan" and not selection.scan_ok(str(c.get("type", ""))):
                    continue
                label = f"{r['label']}/{c.get('label') or cid}"
                targets.append(Target(f"{experiment_uri(r['ID'])}/{child}/{segment(cid)}", label))
        return targets
    raise XnatMlError(
        f"wrapper {wrapper.command_name}/{wrapper.wrapper_name}: batches cannot "
        f"select objects of type {kind or 'unknown'}"
    )


def _in_context(wrapper: InstalledWrapper, xsi_type: str | None) -> bool:
    if not wrapper.contexts or not xsi_type:
        return True
    return any(context_matches(c, xsi_type) for c in wrapper.contexts)


# ----------------------------------------------------------------------------- launching


def launch_targets(
    session: XNATSession, record: BatchRecord, targets: Iterable[Target]
) -> dict[str, Any]:
    """Launch the record's wrapper on every target; returns the attempt (also appended)."""
    targets = list(targets)
    base = f"/xapi/projects/{segment(record.project)}/wrappers/{record.wrapper_id}"
    root = segment(record.root_input)
    body = dict(record.inputs, **{record.root_input: json.dumps([t.uri for t in targets])})
    response = session.post(
        f"{base}/root/{root}/bulklaunch", json=body, accepted_status=[200, 201, 404, 405]
    )
    labels = {t.uri: t.label for t in targets}
    if response.status_code in (200, 201):
        report = response.json()
        items = [_item(s, record.root_input, labels) for s in report.get("successes", [])]
        items += [_item(f, record.root_input, labels) for f in report.get("failures", [])]
        bulk_id = report.get("bulk-launch-id")
    else:  # no bulk launch on this server: one launch per object
        items, bulk_id = [], None
        for target in targets:
            one = session.post(
                f"{base}/root/{root}/launch",
                json=dict(record.inputs, **{record.root_input: target.uri}),
                accepted_status=list(range(200, 600)),
            )
            answer = _json_or_text(one)
            if one.status_code >= 300 and isinstance(answer, str):
                answer = {"status": "failure", "message": answer}
            answer.setdefault("params", {record.root_input: target.uri})
            items.append(_item(answer, record.root_input, labels))
    attempt = {
        "time": _now(),
        "bulk-launch-id": bulk_id,
        "items": sorted(items, key=lambda i: i["label"]),
    }
    record.attempts.append(attempt)
    return attempt


def _item(entry: dict[str, Any], root_input: str, labels: dict[str, str]) -> dict[str, Any]:
    uri = str((entry.get("params") or {}).get(root_input, ""))
    ok = entry.get("status", "success") == "success"
    container = (entry.get("id") or entry.get("container-id")) if ok else None
    return {
        "uri": uri,
        "label": labels.get(uri, uri),
        "container": str(container) if container is not None else None,
        "workflow-id": entry.get("workflow-id"),
        "error": None if ok else str(entry.get("message") or "launch refused"),
    }


def _json_or_text(response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text.strip()[:500]


def new_record(
    project: str, wrapper: InstalledWrapper, inputs: dict[str, str], selection: Selection
) -> BatchRecord:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return BatchRecord(
        id=f"batch-{stamp}-{secrets.token_hex(3)}",
        project=project,
        command=wrapper.command_name,
        wrapper=wrapper.wrapper_name,
        wrapper_id=wrapper.wrapper_id,
        root_input=wrapper.root_input,
        inputs=inputs,
        selection=selection.to_json(),
        created=_now(),
    )


def run_batch(
    session: XNATSession,
    project: str,
    command: str,
    wrapper: str | None,
    selection: Selection,
    inputs: dict[str, str],
) -> tuple[BatchRecord, dict]:
    """Select, launch, and store the batch record; returns it and the launch attempt."""
    found = find_wrapper(session, command, wrapper)
    if found is None:
        raise XnatMlError(f"command {command}: not installed on the XNAT server")
    require_enabled(session, project, found)
    targets = select_targets(session, project, found, selection)
    if not targets:
        raise XnatMlError(
            f"project {project}: nothing matches the selection "
            f"{selection.to_json() or '(all)'} for {command}/{found.wrapper_name}"
        )
    record = new_record(project, found, inputs, selection)
    attempt = launch_targets(session, record, targets)
    save_record(session, record)
    return record, attempt


def rerun_failed(session: XNATSession, project: str, batch_id: str) -> tuple[BatchRecord, dict]:
    """Relaunch the objects whose latest container failed (or whose launch was refused)."""
    record = load_record(session, project, batch_id)
    statuses = {
        key: str(c.get("status", "")) for c in list_containers(session) for key in job_keys_of(c)
    }
    failed = [
        Target(item["uri"], item["label"])
        for item in record.latest_items().values()
        if item.get("error")
        or any(statuses.get(k, "").startswith(FAILED_PREFIX) for k in _item_keys(item))
    ]
    if not failed:
        raise XnatMlError(f"batch {batch_id}: no failed job to rerun")
    attempt = launch_targets(session, record, failed)
    save_record(session, record)
    return record, attempt


@dataclass(frozen=True)
class ItemState:
    """Where one object of a batch stands: its latest job's status, and why it failed."""

    label: str
    container: str | None
    status: str  # the job's status; "Refused" when its launch was; "Queued" before a job shows
    reason: str = ""


REFUSED, QUEUED = "Refused", "Queued"


def batch_states(session: XNATSession, project: str, batch_id: str) -> list[ItemState]:
    """Each object's latest attempt, from one container listing; a failed job's reason is the
    last line of its stderr (the job's own one-line error), else the server's message."""
    record = load_record(session, project, batch_id)
    containers = {key: c for c in list_containers(session) for key in job_keys_of(c)}
    states = []
    for item in sorted(record.latest_items().values(), key=lambda i: i["label"]):
        if item.get("error"):
            states.append(ItemState(item["label"], None, REFUSED, str(item["error"])))
            continue
        job = next((containers[k] for k in sorted(_item_keys(item)) if k in containers), None)
        if job is None:
            states.append(ItemState(item["label"], item.get("container"), QUEUED))
            continue
        status = str(job.get("status", ""))
        reason = _failure_reason(session, job) if status.startswith(FAILED_PREFIX) else ""
        states.append(ItemState(item["label"], str(job.get("id")), status, reason))
    return states


def _failure_reason(session: XNATSession, job: dict[str, Any]) -> str:
    response = session.get(f"/xapi/containers/{segment(str(job.get('id')))}/logs/stderr",
                           accepted_status=[200, 404])  # fmt: skip
    lines = [line.strip() for line in response.text.splitlines() if line.strip()]
    if response.status_code == 200 and lines:
        return lines[-1][:500]
    return str(job.get("message") or "no reason recorded")


# ----------------------------------------------------------------------------- records


def _record_uri(project: str) -> str:
    return resource_uri(project_uri(project), BATCHES_RESOURCE)


def save_record(session: XNATSession, record: BatchRecord) -> None:
    with scratch.temporary("batch-") as tmp:
        path = Path(tmp) / f"{record.id}.json"
        path.write_text(json.dumps(record.to_json(), indent=1), encoding="utf-8")
        upload_directory(
            session,
            project_uri(record.project),
            BATCHES_RESOURCE,
            tmp,
            format="JSON",
            content="xnat-ml batch records",
        )


def load_record(session: XNATSession, project: str, batch_id: str) -> BatchRecord:
    if not batch_id or "/" in batch_id or batch_id.startswith("."):
        raise XnatMlError(f"batch {batch_id!r}: not a batch id")
    uri = f"{_record_uri(project)}/files/{segment(batch_id)}.json"
    response = session.get(uri, accepted_status=[200, 404])
    if response.status_code == 404:
        raise XnatMlError(f"batch {batch_id}: no record in project {project} ({BATCHES_RESOURCE})")
    try:
        return BatchRecord.from_json(response.json())
    except ValueError:
        raise XnatMlError(f"batch {batch_id}: its record is not JSON") from None


# ----------------------------------------------------------------------------- jobs


def list_containers(session: XNATSession) -> list[dict[str, Any]]:
    with reported_as("Container Service containers (/xapi/containers)"):
        containers = session.get_json("/xapi/containers")
    if not isinstance(containers, list):
        raise XnatMlError("Container Service containers (/xapi/containers): not a list")
    return containers


def filter_jobs(
    containers: Iterable[dict[str, Any]],
    status: str | None = None,
    project: str | None = None,
    keys: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Containers whose status starts with `status` (case-insensitive), in `project`, and
    among `keys` (see `job_keys_of`)."""
    chosen = []
    for c in containers:
        if status and not str(c.get("status", "")).lower().startswith(status.lower()):
            continue
        if project and c.get("project") != project:
            continue
        if keys is not None and not job_keys_of(c) & keys:
            continue
        chosen.append(c)
    return sorted(chosen, key=lambda c: int(c["id"]) if str(c.get("id", "")).isdigit() else 0)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
