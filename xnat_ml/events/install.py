"""Install the subscriptions of `event_handlers/` into a project of any XNAT, over REST.

Each file is an XNAT subscription whose `action-key` ends in the placeholder `WRAPPER_ID`, plus an
`x-xnat-ml` block naming the command and wrapper to run. Installing looks the wrapper up by name
on the target server (ids differ from one XNAT to the next), installs the command from
`command_json/` if it is missing, enables the wrapper for the project and creates the project
subscription, named `<project>: <name>`. Running it again changes nothing (or updates a
subscription whose file changed).

A handler marked `"opt-in": true` in its block (infer: it runs a model on every new scan's
DICOM) is installed only when named (`--only NAME`, or `--file`); its `settings` (`{"MODEL":
"model"}`: attribute -> kind of value) must each be given (`--set MODEL=NAME[:N]`) and are
checked against the project before they go into the subscription's `attributes`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml.assets import shipped_dir
from xnat_ml.bounded_json import read_json
from xnat_ml.containers.installed import COMMAND_DIR, enable_wrapper, require_wrapper
from xnat_ml.errors import XnatMlError
from xnat_ml.events.subscription import SubscriptionError, action_key_for, parse_subscription
from xnat_ml.training.project_models import find_model, split_ref
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import segment

log = logging.getLogger(__name__)

HANDLER_DIR = shipped_dir("event_handlers")
PLACEHOLDER = "WRAPPER_ID"
EXTENSION_KEY = "x-xnat-ml"
SETTING_KINDS = ("model",)  # what a handler's setting may name: a model version of the project


@dataclass(frozen=True)
class Handler:
    """One shipped subscription file, read and checked."""

    path: Path
    document: dict[str, Any]  # the subscription, without the x-xnat-ml block
    command: str
    wrapper: str | None
    opt_in: bool = False
    settings: dict[str, str] = field(default_factory=dict)  # attribute -> kind of value

    @property
    def name(self) -> str:
        """What `--only` calls it: the file name without `.subscription.json`."""
        return self.path.name.removesuffix(".json").removesuffix(".subscription")


def read_handler(path: Path) -> Handler:
    document = read_json(path, f"event handler {path}")
    if not isinstance(document, dict) or not isinstance(document.get(EXTENSION_KEY), dict):
        raise XnatMlError(f"event handler {path}: no '{EXTENSION_KEY}' block naming its command")
    extension = document.pop(EXTENSION_KEY)
    command = extension.get("command")
    if not isinstance(command, str) or not command:
        raise XnatMlError(f"event handler {path}: '{EXTENSION_KEY}.command' is missing")
    try:  # validate now, with a stand-in wrapper id, so a broken file fails before any REST call
        parse_subscription(dict(document, **{"action-key": action_key_for(1)}))
    except SubscriptionError as exc:
        raise XnatMlError(f"event handler {path}: {exc}") from None
    settings = extension.get("settings", {})
    if not isinstance(settings, dict) or any(
        not isinstance(k, str) or v not in SETTING_KINDS for k, v in settings.items()
    ):
        raise XnatMlError(
            f"event handler {path}: '{EXTENSION_KEY}.settings' maps attribute names to one of "
            f"{', '.join(SETTING_KINDS)}"
        )
    opt_in = extension.get("opt-in", False)
    if not isinstance(opt_in, bool):
        raise XnatMlError(f"event handler {path}: '{EXTENSION_KEY}.opt-in' is not true or false")
    return Handler(path, document, command, extension.get("wrapper"), opt_in, settings)


def handler_files(directory: Path = HANDLER_DIR) -> list[Path]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise XnatMlError(f"event handlers folder {directory}: holds no *.json subscription")
    return files


def default_handlers(directory: Path = HANDLER_DIR) -> list[Handler]:
    """What a plain `events install` installs: every handler not marked opt-in."""
    return select_handlers([read_handler(p) for p in handler_files(directory)], None, {})


def select_handlers(
    handlers: list[Handler], only: list[str] | None, values: dict[str, str]
) -> list[Handler]:
    """The handlers to install: those named by `only`, else every one not marked opt-in.
    Every `--set` must be a setting of a selected handler, and each of their settings given."""
    if only:
        known = {h.name: h for h in handlers}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise XnatMlError(f"event handler {unknown[0]}: not among {', '.join(sorted(known))}")
        chosen = [known[n] for n in dict.fromkeys(only)]
    else:
        chosen = [h for h in handlers if not h.opt_in]
    taken = {key for h in chosen for key in h.settings}
    for key in values:
        if key not in taken:
            raise XnatMlError(
                f"--set {key}: no selected event handler takes it"
                + (f" (they take {', '.join(sorted(taken))})" if taken else "")
            )
    for handler in chosen:
        for key in handler.settings:
            if not values.get(key):
                raise XnatMlError(
                    f"event handler {handler.name}: needs --set {key}=... "
                    f"(a {handler.settings[key]} of the project)"
                )
    return chosen


def settle(session: XNATSession, project: str, handler: Handler, values: dict[str, str]) -> Handler:
    """The handler with its settings checked against `project` and put in its attributes (a
    model named without a version is pinned to the latest one now)."""
    if not handler.settings:
        return handler
    attributes = dict(handler.document.get("attributes") or {})
    for key in handler.settings:  # the only kind: a model version
        name, number = split_ref("model", values[key])
        attributes[key] = f"{name}:{find_model(session, project, name, number)}"
    return replace(handler, document=dict(handler.document, attributes=attributes))


def _require_event_service(session: XNATSession) -> None:
    """A fresh XNAT ships with its Event Service switched off; say so instead of failing later."""
    response = session.get("/xapi/events/prefs", accepted_status=[200, 401, 403, 404])
    if response.status_code != 200:
        return  # older XNATs have no prefs; creating the subscription will tell
    try:
        enabled = response.json().get("enabled", True)
    except (ValueError, AttributeError):
        return
    if enabled is False:
        raise XnatMlError(
            "XNAT Event Service: switched off on this server; a site admin turns it on "
            "(Administer > Event Service, or PUT /xapi/events/prefs {\"enabled\": true})"
        )


def install_handler(
    session: XNATSession, project: str, handler: Handler, command_dir: Path = COMMAND_DIR
) -> str:
    """Install one handler into `project`; returns what happened (created/updated/unchanged)."""
    unset = [k for k in handler.settings if not (handler.document.get("attributes") or {}).get(k)]
    if unset:  # an opt-in handler not through `settle`: it would launch with no MODEL
        raise XnatMlError(f"event handler {handler.name}: needs --set {unset[0]}=...")
    wrapper = require_wrapper(session, handler.command, handler.wrapper, install_from=command_dir)
    enable_wrapper(session, project, wrapper)

    wanted = dict(handler.document)
    wanted["name"] = f"{project}: {handler.document['name']}"
    wanted["action-key"] = action_key_for(wrapper.wrapper_id)
    wanted["event-filter"] = dict(wanted["event-filter"], **{"project-ids": [project]})
    wanted_sub = parse_subscription(wanted)

    _require_event_service(session)
    base = f"/xapi/projects/{segment(project)}/events"
    with reported_as(f"project {project}: listing its event subscriptions"):
        existing = session.get_json(f"{base}/subscriptions")
    same_name = [s for s in existing or [] if s.get("name") == wanted["name"]]
    if not same_name:
        with reported_as(f"subscription {wanted['name']!r}: creating it"):
            session.post(f"{base}/subscription", json=wanted, accepted_status=[200, 201])
        return "created"
    current = same_name[0]
    try:
        current_sub = parse_subscription({k: v for k, v in current.items() if k != "editable"})
    except SubscriptionError:
        current_sub = None
    unchanged = current_sub is not None and (
        current_sub.event_filter == wanted_sub.event_filter
        and current_sub.action_key == wanted_sub.action_key
        and current_sub.attributes == wanted_sub.attributes
        and current_sub.active == wanted_sub.active
    )
    if unchanged:
        return "unchanged"
    with reported_as(f"subscription {wanted['name']!r}: updating it"):
        session.put(
            f"{base}/subscription/{int(current['id'])}", json=wanted, accepted_status=[200, 204]
        )
    return "updated"
