"""Launch forms built from the Container Service's launch UI (`GET .../wrappers/{id}/launch`),
so that the same form works on a real XNAT: the fields are the inputs a user may set, with the
types, defaults, choices and required flags XNAT gives; a launch is XNAT's own launch call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xnat.session import XNATSession

from xnat_ml.containers.installed import InstalledWrapper, find_wrapper
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import segment

EDITABLE = ("text", "password", "boolean", "select-one", "select-many")
FAILED = ("Failed", "Failed (Upload)")  # job statuses a rerun is offered for


@dataclass
class Field:
    name: str
    label: str
    type: str  # XNAT's input-type
    description: str = ""
    required: bool = False
    value: str = ""
    options: list[str] = field(default_factory=list)


@dataclass
class LaunchForm:
    command: str
    wrapper: InstalledWrapper
    root_value: str | None  # None: the form first asks which object (a session) to run on
    fields: list[Field]
    fixed: list[tuple[str, str]]  # (label, value) the user cannot change
    description: str = ""


def launch_form(xnat: XNATSession, project: str, command: str, root: str | None) -> LaunchForm:
    wrapper = find_wrapper(xnat, command)
    if wrapper is None:
        raise XnatMlError(f"command {command}: not installed on this XNAT "
                          "(a site admin installs it: xnat-ml commands install)")  # fmt: skip
    value = project if wrapper.root_type == "Project" else (root or None)
    query = {wrapper.root_input: value} if value else {}
    with reported_as(f"command {command}: launch form"):
        ui = xnat.get_json(f"/xapi/projects/{segment(project)}/wrappers/"
                           f"{wrapper.wrapper_id}/launch", query=query)  # fmt: skip
    if not isinstance(ui, dict):
        raise XnatMlError(f"command {command}: the launch form XNAT sent is not a JSON object")
    values: dict[str, list[str]] = {}
    _collect_values(ui.get("input-values") or [], values)
    fields, fixed = [], []
    for config in _flatten(ui.get("input-config") or []):
        name = config.get("name")
        if not isinstance(name, str) or not name:
            continue
        current = values.get(name, [])
        if name == wrapper.root_input:
            continue
        if config.get("input-type") == "static" or not config.get("user-settable", True):
            if current:
                fixed.append((config.get("label") or name, current[0]))
            continue
        if config.get("input-type") not in EDITABLE:
            continue
        options = [str(o) for o in config.get("select-values") or [] if isinstance(o, str | int)]
        if not options and len(current) > 1:
            options = current
        fields.append(Field(name, config.get("label") or name, config["input-type"],
                            config.get("description") or "", bool(config.get("required")),
                            current[0] if len(current) == 1 else "", options))  # fmt: skip
    meta = ui.get("meta") if isinstance(ui.get("meta"), dict) else {}
    return LaunchForm(
        command,
        wrapper,
        value,
        fields,
        fixed,
        meta.get("wrapper-description") or meta.get("command-description") or "",
    )


def _dicts(items: Any) -> list[dict]:
    """The JSON objects of a list from XNAT (anything else in it is skipped)."""
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _flatten(trees: Any, depth: int = 0) -> list[dict]:
    out = []
    for tree in _dicts(trees) if depth < 16 else []:
        out.append(tree)
        out.extend(_flatten(tree.get("children"), depth + 1))
    return out


def _collect_values(trees: Any, into: dict[str, list[str]], depth: int = 0) -> None:
    for tree in _dicts(trees) if depth < 16 else []:
        for value in _dicts(tree.get("values")):
            into.setdefault(str(tree.get("name")), []).append(str(value.get("value")))
            _collect_values(value.get("children"), into, depth + 1)


def submit(xnat: XNATSession, project: str, form: LaunchForm, posted: Mapping[str, Any]) -> int:
    """Launch with the posted values of the form's fields; the job id (XnatMlError with XNAT's
    reason when it refuses)."""
    if form.root_value is None:
        raise XnatMlError(f"{form.command}: choose the {form.wrapper.root_type.lower()} first")
    values: dict[str, Any] = {form.wrapper.root_input: form.root_value}
    for f in form.fields:
        if f.type == "select-many":
            chosen = posted.getlist(f.name) if hasattr(posted, "getlist") else []
            if chosen:
                values[f.name] = chosen
        elif f.type == "boolean":
            values[f.name] = "true" if posted.get(f.name) else "false"
        elif str(posted.get(f.name, "")).strip():
            values[f.name] = str(posted[f.name]).strip()
        elif f.required:
            raise XnatMlError(f"{form.command}: {f.label} is required")
    return _launch(xnat, project, form.wrapper.wrapper_id, form.wrapper.root_input, values,
                   form.command)  # fmt: skip


def _launch(xnat: XNATSession, project: str, wrapper_id: int, root: str, values: dict,
            what: str) -> int:  # fmt: skip
    answer = xnat.post(f"/xapi/projects/{segment(project)}/wrappers/{wrapper_id}/root/"
                       f"{segment(root)}/launch", json=values,
                       accepted_status=[200, 201, 400, 401, 403, 404, 409, 422])  # fmt: skip
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if answer.status_code >= 400 or body.get("status") == "failure":
        reason = body.get("message") or answer.text.strip().splitlines()[0][:200]
        raise XnatMlError(f"{what}: XNAT refused the launch (HTTP {answer.status_code}: {reason})")
    return int(body.get("id") or body.get("container-id") or 0)


def rerun(xnat: XNATSession, project: str, job: int) -> int:
    """Launch a failed job again with the inputs it was launched with; the new job's id."""
    with reported_as(f"job {job}"):
        record = xnat.get_json(f"/xapi/containers/{job}")
        if record.get("project") != project:
            raise XnatMlError(f"job {job}: not a job of project {project}")
        command = xnat.get_json(f"/xapi/commands/{record['command-id']}")
    if record.get("status") not in FAILED:
        raise XnatMlError(f"job {job}: is {record.get('status')}; only failed jobs are rerun")
    values = {i["name"]: i["value"] for i in record.get("inputs") or []
              if i.get("type") in (None, "wrapper-external", "command")}  # fmt: skip
    if any(v == "*****" for v in values.values()):
        raise XnatMlError(f"job {job}: has a hidden (sensitive) input; launch it anew instead")
    wrapper = next((w for w in command.get("xnat") or []
                    if int(w.get("id") or 0) == int(record["wrapper-id"])), None)  # fmt: skip
    if wrapper is None or not wrapper.get("external-inputs"):
        raise XnatMlError(f"job {job}: its wrapper is no longer installed")
    root = wrapper["external-inputs"][0]["name"]
    return _launch(xnat, project, int(record["wrapper-id"]), root, values, f"job {job} rerun")
