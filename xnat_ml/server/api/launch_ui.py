"""`GET .../wrappers/{id}/launch`: the Container Service's launch UI, what a launch form is built
from (XNAT's own launcher and the ML dashboard read it).

The answer has XNAT's shape (its `LaunchUi`): `meta` (command and wrapper),
`container-server-config`, `input-config` (one tree per root input: name, label, description,
required, user-settable, advanced, multiple, `input-type`, select-values, children) and
`input-values` (the same trees with each input's values, a value's children under it).
As in XNAT, the query parameters are the values of the wrapper's external inputs; an input
derived from an object given there gets its value (the object's `id`, `label`, `project-id`,
...) and appears as that object's child. Inputs the command line still needs (not provided by a
wrapper input) are roots of their own.

Project forms need the read role in the project (XNAT: `restrictTo = Read`), and an object given
in the query must be one the caller may read and, for a project form, of that project.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, NotFound

from xnat_ml.containers import registry
from xnat_ml.containers.command import Command, CommandInput, DerivedInput, Wrapper, WrapperInput
from xnat_ml.containers.resolve import InputError, check_object_project, object_uri
from xnat_ml.containers.validate import OBJECT_TYPES
from xnat_ml.server import auth
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.objects import resolve_object
from xnat_ml.xnat.uris import parse_path

bp = Blueprint("launch_ui", __name__)

# command input type -> XNAT's UiInputType name (a sensitive text input is a password field)
_COMMAND_UI = {"boolean": "boolean", "select-one": "select-one", "select-many": "select-many",
               "file": "file"}  # fmt: skip


@bp.get("/xapi/wrappers/<int:wrapper_id>/launch")
def site_launch_ui(wrapper_id: int) -> Response:
    auth.require_login()
    return _launch_ui(None, *_wrapper(wrapper_id))


@bp.get("/xapi/commands/<int:command_id>/wrappers/<wrapper_name>/launch")
def site_command_launch_ui(command_id: int, wrapper_name: str) -> Response:
    auth.require_login()
    return _launch_ui(None, *_named_wrapper(command_id, wrapper_name))


@bp.get("/xapi/projects/<project>/wrappers/<int:wrapper_id>/launch")
def project_launch_ui(project: str, wrapper_id: int) -> Response:
    auth.require_project_role(project, "read")
    return _launch_ui(project, *_wrapper(wrapper_id))


@bp.get("/xapi/projects/<project>/commands/<int:command_id>/wrappers/<wrapper_name>/launch")
def project_command_launch_ui(project: str, command_id: int, wrapper_name: str) -> Response:
    auth.require_project_role(project, "read")
    return _launch_ui(project, *_named_wrapper(command_id, wrapper_name))


def _wrapper(wrapper_id: int) -> tuple[Command, Wrapper]:
    found = registry.find_wrapper(get_db(), wrapper_id)
    if found is None:
        raise NotFound(f"Wrapper {wrapper_id} does not exist.")
    return found


def _named_wrapper(command_id: int, wrapper_name: str) -> tuple[Command, Wrapper]:
    record = get_db().get(registry.CommandRecord, command_id)
    if record is None:
        raise NotFound(f"Command {command_id} does not exist.")
    command = registry.with_ids(get_db(), record)
    wrapper = next((w for w in command.xnat if w.name == wrapper_name), None)
    if wrapper is None:
        raise NotFound(f"Command {command_id} has no wrapper {wrapper_name!r}.")
    return command, wrapper


def _launch_ui(project: str | None, command: Command, wrapper: Wrapper) -> Response:
    given = {k: v for k, v in request.args.items() if k != "format"}
    known = {i.name for i in (*wrapper.inputs, *command.inputs)}
    for name in given:
        if name not in known:
            raise BadRequest(f"Launch UI: {name!r} is not an input of wrapper {wrapper.name!r}.")
    objects = _given_objects(project, wrapper, given)
    provided = {i.provides_value_for_command_input for i in wrapper.inputs}
    configs, values = [], []
    for root in wrapper.external_inputs:
        config, value = _tree(root, wrapper, given, objects)
        configs.append(config)
        values.append(value)
    for inp in command.inputs:
        if inp.name in provided:
            continue
        configs.append(_input_config(inp, _command_ui_type(inp), []))
        value = given.get(inp.name, inp.default_value)
        values.append(_value_tree(inp.name, [] if value in (None, "") else [(str(value), [])]))
    return jsonify({
        "meta": {
            "command-id": command.id, "command-name": command.name,
            "command-label": command.label, "command-description": command.description,
            "command-metadata": command.command_metadata,
            "wrapper-id": wrapper.id, "wrapper-name": wrapper.name,
            "wrapper-label": wrapper.label, "wrapper-description": wrapper.description,
            "image-name": command.image, "image-type": command.type,
        },
        "container-server-config": {"swarm-constraints": None},
        "input-config": configs,
        "input-values": values,
    })  # fmt: skip


def _given_objects(project: str | None, wrapper: Wrapper, given: dict) -> dict[str, Any]:
    """The archive objects the query names for object-typed external inputs (400 for a value
    that names none the caller may read, or one of another project)."""
    objects = {}
    for inp in wrapper.external_inputs:
        value = given.get(inp.name, inp.default_value)
        if inp.type not in OBJECT_TYPES or value in (None, ""):
            continue
        try:
            uri = object_uri(inp.name, inp.type, value)
            try:
                obj = resolve_object(parse_path(uri), access="read")
            except HTTPException:
                raise InputError(inp.name, f"{value!r}: no such object you may read") from None
            if project is not None:
                check_object_project(inp.name, uri, obj.project_obj.id, project)
        except InputError as exc:
            raise BadRequest(f"Launch UI: {exc}") from None
        objects[inp.name] = (uri, obj)
    return objects


def _tree(
    inp: WrapperInput, wrapper: Wrapper, given: dict, objects: dict
) -> tuple[dict, dict]:
    """The input's config tree and value tree: its value(s), and under an object value the
    inputs derived from it (XNAT lists children only where their parent has a value)."""
    if inp.name in objects:
        uri, obj = objects[inp.name]
        kids = [d for d in wrapper.derived_inputs if d.derived_from_wrapper_input == inp.name]
        trees = [_derived_tree(d, obj, wrapper, given) for d in kids]
        label = getattr(obj, "label", None) or getattr(obj, "id", None) or uri
        config = _input_config(inp, "static", [c for c, _ in trees])  # one value: fixed
        return config, _value_tree(inp.name, [(uri, [v for _, v in trees], str(label))])
    value = given.get(inp.name, inp.default_value)
    values = [] if value in (None, "") else [(str(value), [])]
    ui = "static" if values and inp.user_settable is False else "text"
    return _input_config(inp, ui, []), _value_tree(inp.name, values)


def _derived_tree(inp: DerivedInput, parent: Any, wrapper: Wrapper, given: dict) -> tuple:
    prop = inp.derived_from_xnat_object_property
    value = given.get(inp.name)
    if value is None and inp.type not in OBJECT_TYPES and prop:
        value = _property(parent, prop)
    values = [] if value in (None, "") else [(str(value), [])]
    ui = "static" if values or inp.user_settable is False else "text"
    return _input_config(inp, ui, []), _value_tree(inp.name, values)


def _property(obj: Any, prop: str) -> str | None:
    """The Container Service's object properties that the embedded store holds."""
    if prop == "project-id":
        return obj.project_obj.id
    if prop == "session-id":
        session = getattr(obj, "experiment", None)
        return getattr(session, "id", None)
    if prop in ("id", "label", "name"):
        return getattr(obj, prop, None) or getattr(obj, "id", None)
    return None


def _command_ui_type(inp: CommandInput) -> str:
    if inp.type in _COMMAND_UI:
        return _COMMAND_UI[inp.type]
    return "password" if inp.sensitive else "text"


def _input_config(inp: WrapperInput | CommandInput, ui: str, children: list[dict]) -> dict:
    settable = getattr(inp, "user_settable", None)
    return {
        "name": inp.name,
        "label": inp.label or inp.name,
        "description": inp.description,
        "advanced": False,
        "required": bool(inp.required),
        "user-settable": settable is None or settable,
        "multiple": bool(getattr(inp, "multiple", False)),
        "input-type": ui,
        "derived-value-info": None,
        "derived-value-message": None,
        "select-values": list(getattr(inp, "select_values", []) or []),
        "children": children,
    }


def _value_tree(name: str, values: list[tuple]) -> dict:
    """`values`: (value, children value trees[, label]) per value."""
    return {
        "name": name,
        "values": [
            {"value": v[0], "label": v[2] if len(v) > 2 else v[0], "children": v[1]}
            for v in values
        ],
    }
