"""The commands installed on an XNAT's Container Service, found by name over REST.

Command and wrapper ids are handed out by each XNAT on installation, so files we ship name
commands and wrappers by name; this module turns names into ids on a given server, installs a
command from `command_json/` when it is missing, and enables a wrapper for a project.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml.assets import shipped_dir
from xnat_ml.bounded_json import read_json
from xnat_ml.containers.command import GPU_RESOURCES, MAX_COMMAND_BYTES
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import segment

log = logging.getLogger(__name__)

COMMAND_DIR = shipped_dir("command_json")


@dataclass(frozen=True)
class InstalledWrapper:
    command_id: int
    command_name: str
    wrapper_id: int
    wrapper_name: str
    contexts: tuple[str, ...]
    root_input: str  # the first external input: what a launch is "on"
    root_type: str  # its type: Project, Subject, Session, Scan, Assessor, Resource, ...


def list_commands(session: XNATSession) -> list[dict[str, Any]]:
    with reported_as("Container Service commands (/xapi/commands)"):
        commands = session.get_json("/xapi/commands")
    if not isinstance(commands, list):
        raise XnatMlError("Container Service commands (/xapi/commands): the answer is not a list")
    return commands


def find_wrapper(
    session: XNATSession, command: str, wrapper: str | None = None
) -> InstalledWrapper | None:
    """The installed wrapper `wrapper` of command `command` (when `wrapper` is None: the only one,
    the one named like the command, or the only one launched on a session, as batches are);
    None when the command is not installed."""
    candidates = [c for c in list_commands(session) if c.get("name") == command]
    if not candidates:
        return None
    found = max(candidates, key=lambda c: int(c.get("id") or 0))  # newest install wins
    wrappers = found.get("xnat") or []
    if wrapper is None:
        named = [w for w in wrappers if w.get("name") == command]
        on_session = [w for w in wrappers if _root_type(w) == "Session"]
        chosen = named or (wrappers if len(wrappers) == 1 else []) or (
            on_session if len(on_session) == 1 else []
        )
        if not chosen:
            names = ", ".join(str(w.get("name")) for w in wrappers) or "none"
            raise XnatMlError(f"command {command}: choose a wrapper with --wrapper ({names})")
    else:
        chosen = [w for w in wrappers if w.get("name") == wrapper]
        if not chosen:
            names = ", ".join(str(w.get("name")) for w in wrappers) or "none"
            raise XnatMlError(f"command {command}: no wrapper named {wrapper!r} (has: {names})")
    w = chosen[0]
    external = w.get("external-inputs") or []
    if not external:
        raise XnatMlError(
            f"wrapper {command}/{w.get('name')}: it has no external input to launch on"
        )
    return InstalledWrapper(
        command_id=int(found["id"]),
        command_name=command,
        wrapper_id=int(w["id"]),
        wrapper_name=str(w.get("name")),
        contexts=tuple(w.get("contexts") or ()),
        root_input=str(external[0]["name"]),
        root_type=str(external[0].get("type", "")),
    )


def install_command(session: XNATSession, path: Path) -> None:
    """POST a command JSON file to /xapi/commands (needs a site admin)."""
    document = read_json(path, f"command file {path}", max_bytes=MAX_COMMAND_BYTES)
    if not isinstance(document, dict):
        raise XnatMlError(f"command file {path}: expected a JSON object")
    with reported_as(f"command {document.get('name', path.stem)}: installing it"):
        session.post("/xapi/commands", json=document, accepted_status=[200, 201])


def require_wrapper(
    session: XNATSession, command: str, wrapper: str | None = None, install_from: Path | None = None
) -> InstalledWrapper:
    """find_wrapper, installing `install_from/<command>.json` first when the command is missing."""
    found = find_wrapper(session, command, wrapper)
    if found is None and install_from is not None and (install_from / f"{command}.json").is_file():
        log.info("command %s is not installed; installing %s", command, install_from)
        install_command(session, install_from / f"{command}.json")
        found = find_wrapper(session, command, wrapper)
    if found is None:
        raise XnatMlError(
            f"command {command}: not installed on the XNAT server (an admin installs "
            f"command_json/{command}.json through /xapi/commands)"
        )
    return found


def require_enabled(session: XNATSession, project: str, wrapper: InstalledWrapper) -> None:
    """Refuse, naming the switch to turn, a wrapper the project has not enabled: XNAT would
    refuse every launch of it one by one."""
    uri = f"/xapi/projects/{segment(project)}/wrappers/{wrapper.wrapper_id}/enabled"
    with reported_as(f"wrapper {wrapper.command_name}/{wrapper.wrapper_name}: checking it"):
        enabled = session.get_json(uri)
    if enabled is not True:
        raise XnatMlError(
            f"wrapper {wrapper.command_name}/{wrapper.wrapper_name}: not enabled in project "
            f"{project} (a project owner enables it in Project Settings > Configure Commands, "
            f"or PUT {uri}; an admin first site-wide)"
        )


def enable_wrapper(session: XNATSession, project: str, wrapper: InstalledWrapper) -> None:
    """Enable the wrapper site-wide (when we may) and for the project (idempotent)."""
    site = f"/xapi/wrappers/{wrapper.wrapper_id}/enabled"
    # Only admins may enable site-wide; an owner's project enablement is enough where the
    # admin already did it, so a refusal here is not an error.
    response = session.put(site, accepted_status=[200, 201, 204, 401, 403, 404])
    if response.status_code not in (200, 201, 204):
        log.debug(
            "site-wide enable of wrapper %s answered %s", wrapper.wrapper_id, response.status_code
        )
    with reported_as(
        f"wrapper {wrapper.command_name}/{wrapper.wrapper_name}: enabling it for project {project}"
    ):
        session.put(
            f"/xapi/projects/{segment(project)}/wrappers/{wrapper.wrapper_id}/enabled",
            accepted_status=[200, 201, 204],
        )


def _root_type(wrapper: dict[str, Any]) -> str | None:
    """The type of a listed wrapper's first external input (what a launch is on)."""
    external = wrapper.get("external-inputs") or [{}]
    return external[0].get("type")


# ------------------------------------------------------------------ setting up a site

def without_gpus(document: dict[str, Any]) -> dict[str, Any]:
    """The command as a site without GPUs installs it: no `gpus`, no GPU generic resources,
    no `nvidia` runtime nor its NVIDIA_* variables (a job would otherwise wait for, or fail
    without, a GPU)."""
    copy = {k: v for k, v in document.items() if k != "gpus"}
    variables = {k: v for k, v in (copy.pop("environment-variables", None) or {}).items()
                 if not str(k).startswith("NVIDIA_")}  # fmt: skip
    if variables:
        copy["environment-variables"] = variables
    resources = {k: v for k, v in (copy.pop("generic-resources", None) or {}).items()
                 if str(k).lower() not in GPU_RESOURCES}  # fmt: skip
    if resources:
        copy["generic-resources"] = resources
    if str(copy.get("runtime", "")).lower() == "nvidia":
        del copy["runtime"]
    return copy


def shipped_commands(names: list[str] | None = None) -> list[Path]:
    """The command files of `command_json/` (those named, by command name, in that order)."""
    files = {p.stem: p for p in sorted(COMMAND_DIR.glob("*.json"))}
    if not names:
        return list(files.values())
    unknown = [n for n in names if n not in files]
    if unknown:
        raise XnatMlError(f"command {unknown[0]}: not shipped (shipped: {', '.join(files)})")
    return [files[n] for n in dict.fromkeys(names)]


def install_shipped(
    session: XNATSession,
    files: list[Path],
    cpu_only: bool = False,
    enable: bool = False,
    project: str | None = None,
) -> list[str]:
    """Install each command file that the server lacks (one POST each: XNAT installs a command
    with all its wrappers), and with `enable` turn its wrappers on site-wide and in `project`;
    one line per command saying what was done. Running it again changes nothing."""
    documents = []
    for path in files:
        document = read_json(path, f"command file {path}", max_bytes=MAX_COMMAND_BYTES)
        if not isinstance(document, dict):
            raise XnatMlError(f"command file {path}: expected a JSON object")
        documents.append(without_gpus(document) if cpu_only else document)
    installed = {(c.get("name"), c.get("version")): c for c in list_commands(session)}
    lines = []
    for document in documents:
        name, version = document.get("name"), document.get("version")
        found = installed.get((name, version))
        if found is None:
            with reported_as(f"command {name} {version}: installing it"):
                session.post("/xapi/commands", json=document, accepted_status=[200, 201])
            found = {(c.get("name"), c.get("version")): c for c in list_commands(session)}.get(
                (name, version)
            )
            if found is None:
                raise XnatMlError(f"command {name} {version}: installed, yet not listed after")
            line = f"command {name} {version}: installed (id {found.get('id')})"
        else:
            line = f"command {name} {version}: already installed (id {found.get('id')})"
            if _gpu_request(found) != _gpu_request(document):
                line += (f"; its GPU request differs from this one: DELETE /xapi/commands/"
                         f"{found.get('id')} and install again to change it")  # fmt: skip
        if enable:
            line += "; " + _enable_all(session, found, project)
        lines.append(line)
    return lines


def _gpu_request(document: dict[str, Any]) -> tuple:
    resources = document.get("generic-resources") or {}
    gpus = {str(k).lower(): str(v) for k, v in resources.items() if str(k).lower() in GPU_RESOURCES}
    return (str(document.get("gpus") or ""), tuple(sorted(gpus.items())))


def _enable_all(session: XNATSession, command: dict[str, Any], project: str | None) -> str:
    """Enable every wrapper of an installed command site-wide and in `project` (idempotent)."""
    names = []
    for wrapper in command.get("xnat") or []:
        wrapper_id, wrapper_name = wrapper.get("id"), wrapper.get("name")
        with reported_as(f"wrapper {command.get('name')}/{wrapper_name}: enabling it site-wide"):
            session.put(f"/xapi/wrappers/{wrapper_id}/enabled", accepted_status=[200, 201, 204])
        if project:
            with reported_as(
                f"wrapper {command.get('name')}/{wrapper_name}: enabling it in project {project}"
            ):
                session.put(f"/xapi/projects/{segment(project)}/wrappers/{wrapper_id}/enabled",
                            accepted_status=[200, 201, 204])  # fmt: skip
        names.append(str(wrapper_name))
    where = "site-wide" + (f" and in project {project}" if project else "")
    return f"enabled {', '.join(names) or 'no wrapper'} {where}"
