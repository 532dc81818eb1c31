"""Command resolution: a command + wrapper + input values + the archive → what to run.

Follows the Container Service's `command-resolution.md`: external inputs take the user's value (or
their default) and, for XNAT types, load the object and apply the matcher; derived inputs walk the
XNAT hierarchy up or down from their parent (children filtered by the matcher, in which replacement
keys of inputs resolved so far are substituted) or read a property of it (`$.property`); command
inputs take their default, the user's value, or the value a wrapper input provides; booleans
become `true-value`/`false-value`; the command line gets each command input as flag + separator +
value (several values joined by the multiple-delimiter) and each wrapper input as its value.

`check_inputs` is the part that needs no archive (names, types, required, select values): the
server runs it before accepting a launch so that bad input is a 400, not a failed job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from xnat_ml.bounded_json import load_json
from xnat_ml.containers.archive import ArchiveClient
from xnat_ml.containers.command import (
    Command,
    CommandInput,
    CommandOutput,
    DerivedInput,
    OutputHandler,
    Wrapper,
    WrapperInput,
)
from xnat_ml.containers.matcher import MISSING, MatcherError, compile_matcher, compile_path
from xnat_ml.containers.quoting import Literal, mask_line, raw, substitute_line
from xnat_ml.containers.validate import FILE_TYPES, OBJECT_TYPES
from xnat_ml.containers.xsitypes import object_kind
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.uris import UriError, parse_path

MAX_VALUE_LENGTH = 10_000


class InputError(XnatMlError):
    """A launch input that is missing, unknown or of the wrong type (the server answers 400)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"input {name!r}: {problem}")
        self.input_name = name


@dataclass
class ResolvedMount:
    name: str
    container_path: str
    writable: bool
    sources: list[tuple[str, str]] = field(default_factory=list)  # (kind, uri) to stage


@dataclass
class ResolvedOutput:
    handler: OutputHandler
    output: CommandOutput
    mount: str
    path: str  # relative path inside the mount ('' = the mount itself)
    glob: str | None
    parent: str  # uri of the object to upload under, or "handler:<name>"
    label: str | None


@dataclass
class Resolution:
    command: Command
    wrapper: Wrapper
    wrapper_values: dict[str, Any]
    command_values: dict[str, Any]
    command_line: str
    shown_command_line: str  # what users read: values of sensitive inputs masked
    env: dict[str, str]
    mounts: list[ResolvedMount]
    outputs: list[ResolvedOutput]
    working_dir: str | None
    root_uri: str | None


# ---------------------------------------------------------------------------- static checks


def check_inputs(command: Command, wrapper: Wrapper, values: dict[str, Any]) -> dict[str, Any]:
    """Normalise the launch values (strings, or lists for select-many); InputError on the first
    missing, unknown or wrong-typed one."""
    if not isinstance(values, dict):
        raise InputError("(body)", "launch parameters must be a JSON object of name: value")
    by_name: dict[str, WrapperInput | CommandInput] = {i.name: i for i in command.inputs}
    by_name.update({i.name: i for i in wrapper.inputs})
    for name in values:
        if name not in by_name:
            raise InputError(name, f"not an input of wrapper {wrapper.name!r}")
    external = {i.name for i in wrapper.external_inputs}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = _normalise(name, by_name[name], value)
        if name in external and by_name[name].type in OBJECT_TYPES:
            object_uri(name, by_name[name].type, out[name])  # the value is kept as given
    provided = {i.provides_value_for_command_input for i in wrapper.inputs}
    for inp in wrapper.external_inputs:
        if inp.required and out.get(inp.name) in (None, "") and not inp.default_value:
            raise InputError(inp.name, f"required {inp.type} input is missing")
    for inp in command.inputs:
        if (
            inp.required
            and inp.name not in provided
            and out.get(inp.name) in (None, "")
            and inp.default_value in (None, "")
        ):
            raise InputError(inp.name, "required input is missing")
    return out


def _normalise(name: str, spec: WrapperInput | CommandInput, value: Any) -> Any:
    kind = spec.type
    if kind == "select-many":
        items = value
        if isinstance(value, str):
            try:
                listed = value.strip().startswith("[")
                items = load_json(value, name) if listed else value.split(",")
            except ValueError:
                raise InputError(name, "is not a list of values") from None
        if not isinstance(items, list) or not all(isinstance(v, str | int | float) for v in items):
            raise InputError(name, "expected a list of values")
        items = [str(v).strip() for v in items if str(v).strip()]
        bad = [v for v in items if spec.select_values and v not in spec.select_values]
        if bad:
            raise InputError(name, f"{bad[0]!r} is not one of {spec.select_values}")
        return items
    if isinstance(value, dict | list):
        raise InputError(name, f"expected a single {kind} value, got a JSON {type(value).__name__}")
    if kind == "boolean":
        text = str(value).lower()
        if text not in ("true", "false"):
            raise InputError(name, f"expected true or false, got {value!r}")
        return text
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > MAX_VALUE_LENGTH:
        raise InputError(name, f"longer than {MAX_VALUE_LENGTH} characters")
    if "\x00" in text:
        raise InputError(name, "contains a NUL character")
    if kind == "number":
        try:
            float(text)
        except ValueError:
            raise InputError(name, f"expected a number, got {value!r}") from None
    if kind == "select-one" and spec.select_values and text not in spec.select_values:
        raise InputError(name, f"{text!r} is not one of {spec.select_values}")
    if kind in OBJECT_TYPES and not text.strip():
        raise InputError(name, f"expected the URI or ID of a {kind}")
    return text


# ---------------------------------------------------------------------------- resolution


def resolve(
    command: Command,
    wrapper: Wrapper,
    values: dict[str, Any],
    client: ArchiveClient,
    project: str | None = None,
    raw_inputs: Iterable[str] = (),
) -> Resolution:
    """Resolve every input against the archive and build the command line, mounts and outputs.

    With `project` (the launch's), every object input must belong to it: a job filed under one
    project never reads another's data, whatever the launching user may read.
    Values reach the command line quoted (`quoting.py`), except those of the inputs named in
    `raw_inputs`, which are spliced as they are: the admin's explicit choice for a command whose
    input is meant to be several words (a whole command, extra options)."""
    values = check_inputs(command, wrapper, values)
    return _Resolver(command, wrapper, values, client, project, frozenset(raw_inputs)).run()


class _Resolver:
    def __init__(
        self,
        command: Command,
        wrapper: Wrapper,
        values: dict,
        client: ArchiveClient,
        project: str | None,
        raw_inputs: frozenset[str] = frozenset(),
    ) -> None:
        self.c = command
        self.project = project
        self.w = wrapper
        self.values = values
        self.client = client
        self.objects: dict[str, dict] = {}
        self.wrapper_values: dict[str, Any] = {}
        self.keys: dict[str, str] = {}  # replacement key -> text
        self.provided: dict[str, Any] = {}  # command input -> value from a wrapper input
        self.mount_sources: dict[str, list[tuple[str, str]]] = {}
        self.root_uri: str | None = None
        self.raw_inputs = raw_inputs

    def run(self) -> Resolution:
        for inp in self.w.external_inputs:
            self.external(inp)
        for inp in self.w.derived_inputs:
            self.derived(inp)
        command_values = {i.name: self.command_value(i) for i in self.c.inputs}
        pieces = {inp.key: _words(self.wrapper_values[inp.name]) for inp in self.w.inputs}
        for inp in self.c.inputs:
            pieces[inp.key] = _command_line_piece(inp, command_values[inp.name])
            self.keys[inp.key] = _plain_text(command_values[inp.name])
        every = {i.key: i for i in (*self.w.inputs, *self.c.inputs)}
        for key in pieces:
            if every[key].name in self.raw_inputs:
                pieces[key] = raw(pieces[key])
        template = self.c.command_line or ""
        secret = {key for key, inp in every.items() if inp.sensitive}
        return Resolution(
            command=self.c,
            wrapper=self.w,
            wrapper_values=self.wrapper_values,
            command_values=command_values,
            command_line=substitute_line(template, pieces),
            shown_command_line=mask_line(template, pieces, secret),
            env={k: _substitute(v, self.keys) for k, v in self.c.environment_variables.items()},
            mounts=[
                ResolvedMount(
                    m.name,
                    _checked_path(f"mount {m.name!r}", _substitute(m.path or "", self.keys)),
                    m.writable or any(o.mount == m.name for o in self.c.outputs),
                    self.mount_sources.get(m.name, []),
                )
                for m in self.c.mounts
            ],
            outputs=[self.output(h) for h in self.w.output_handlers],
            working_dir=_checked_path(
                "working-directory", _substitute(self.c.working_directory, self.keys)
            )
            if self.c.working_directory
            else None,
            root_uri=self.root_uri,
        )

    # -- wrapper inputs

    def external(self, inp: WrapperInput) -> None:
        value = self.values.get(inp.name, inp.default_value)
        if value in (None, ""):
            if inp.required:
                raise InputError(inp.name, f"required {inp.type} input is missing")
            self.record(inp, None)
            return
        if inp.type in OBJECT_TYPES:
            uri = object_uri(inp.name, inp.type, value)
            obj = self.client.load(inp.type, uri, children=inp.load_children)
            check_object_type(inp.name, inp.type, obj["xsiType"])
            if self.project is not None:
                check_object_project(inp.name, uri, self.owning_project(obj), self.project)
            if not self.matches(inp, obj):
                raise InputError(inp.name, f"{obj['uri']} does not match {inp.matcher!r}")
            self.objects[inp.name] = obj
            self.root_uri = self.root_uri or obj["uri"]
            self.record(inp, obj["uri"])
        elif inp.type in FILE_TYPES or inp.type == "Config":
            raise InputError(inp.name, f"external {inp.type} inputs are not supported")
        else:
            self.record(inp, value)

    def derived(self, inp: DerivedInput) -> None:
        parent_name = inp.derived_from_wrapper_input or ""
        parent = self.objects.get(parent_name)
        if parent is None:
            if inp.required and self.wrapper_values.get(parent_name) is not None:
                raise InputError(inp.name, f"parent input {parent_name!r} is not an XNAT object")
            if inp.required:
                raise InputError(inp.name, f"parent input {parent_name!r} has no value")
            self.record(inp, None)
            return
        prop = inp.derived_from_xnat_object_property
        if inp.type not in OBJECT_TYPES and inp.type not in ("File", "File[]", "Directory"):
            value = _parsed(_property(parent, prop or ""), inp.parser)
            if value is None and inp.required:
                raise InputError(inp.name, f"{parent['uri']} has no property {prop!r}")
            self.record(inp, value)
            return
        candidates = [c for c in self.children(inp, parent) if self.matches(inp, c)]
        chosen = self.values.get(inp.name)
        if chosen:
            candidates = [
                c for c in candidates if chosen in (c.get("id"), c.get("label"), c.get("uri"))
            ]
        if inp.type in ("File[]",) or inp.multiple:
            picked = [(_property(c, prop) if prop else c["uri"]) for c in candidates]
            if not picked and inp.required:
                raise InputError(inp.name, f"nothing under {parent['uri']} matches")
            self.record(inp, picked or None)
            return
        if not candidates:
            if inp.required:
                what = f" matching {inp.matcher!r}" if inp.matcher else ""
                raise InputError(inp.name, f"no {inp.type} of {parent['uri']}{what}")
            self.record(inp, None)
            return
        if len(candidates) > 1:
            ids = ", ".join(str(c.get("id") or c.get("name")) for c in candidates[:10])
            raise InputError(
                inp.name,
                f"{len(candidates)} {inp.type} objects of {parent['uri']} match ({ids}); "
                "choose one with this input or a stricter matcher",
            )
        obj = candidates[0]
        self.objects[inp.name] = obj
        self.record(inp, _property(obj, prop) if prop else obj["uri"])

    def children(self, inp: DerivedInput, parent: dict) -> list[dict]:
        """Objects of the input's type related to `parent` (down or up the hierarchy)."""
        kind = inp.type
        load = inp.load_children
        if kind == "Resource":
            return parent.get("resources") or (
                self.client.resources(parent["uri"]) if "resources" not in parent else []
            )
        if kind in ("File", "File[]"):
            files = parent.get("files")
            return files if files is not None else self.client.files(parent["uri"])
        if kind == "Directory":
            return [parent]
        if kind == "Scan":
            holder = parent.get("parent-uri")
            if holder:  # up, from a resource of a scan (of none: no scan)
                return [self.client.load("Scan", holder, load)] if _holder(holder) == "Scan" else []
            if "scans" not in parent:
                parent = self.client.load("Session", parent["uri"])
            return parent.get("scans", [])
        if kind == "Assessor":
            if "assessors" not in parent:
                parent = self.client.load("Session", parent["uri"])
            return parent.get("assessors", [])
        if kind in ("Session", "SubjectAssessor"):
            if parent.get("session-id"):  # up, from a scan or assessor
                return [self.client.load("Session", f"/experiments/{parent['session-id']}", load)]
            if parent.get("parent-uri"):  # up, from a resource: through what holds it
                holder = parent["parent-uri"]
                shape = _holder(holder)
                if shape == "Session":
                    return [self.client.load("Session", holder, load)]
                if shape in ("Scan", "Assessor"):
                    return self.children(inp, self.client.load(shape, holder, children=False))
                return []
            if parent.get("xsiType") == "xnat:subjectData":
                return self.client.sessions(parent["project-id"], parent["id"])
            return self.client.sessions(parent["id"])
        if kind == "Subject":
            if parent.get("subject-id"):
                return [self.client.load("Subject", f"/subjects/{parent['subject-id']}", load)]
            return self.client.subjects(parent["id"])
        if kind == "Project":
            project = parent.get("project-id") or parent["id"]
            return [self.client.load("Project", f"/projects/{project}", load)]
        raise InputError(inp.name, f"cannot derive a {kind} from a {parent.get('xsiType')}")

    def owning_project(self, obj: dict) -> str | None:
        """The project of a loaded object (a resource's is its parent's)."""
        if obj.get("xsiType") == "xnat:projectData":
            return obj.get("id")
        if "parent-uri" in obj and "project-id" not in obj:
            parent = obj["parent-uri"]
            return self.owning_project(self.client.load(_holder(parent), parent, children=False))
        return obj.get("project-id")

    def matches(self, inp: WrapperInput, obj: dict) -> bool:
        if not inp.matcher:
            return True
        text = _substitute(inp.matcher, self.keys)
        try:
            return compile_matcher(text)(obj)
        except MatcherError as exc:
            raise InputError(inp.name, f"matcher {text!r} does not parse: {exc}") from None

    def record(self, inp: WrapperInput, value: Any) -> None:
        self.wrapper_values[inp.name] = value
        self.keys[inp.key] = _plain_text(value)
        if inp.provides_value_for_command_input:
            self.provided[inp.provides_value_for_command_input] = value
        if inp.provides_files_for_command_mount and value is not None:
            obj = self.objects.get(inp.name)
            kind = "file" if inp.type == "File" else ("resource" if inp.type in (
                "Resource", "Directory") else "object")  # fmt: skip
            sources = self.mount_sources.setdefault(inp.provides_files_for_command_mount, [])
            if obj is not None and kind == "object":
                # the object's folder: all its resources, whatever load-children said
                resources = obj.get("resources")
                if resources is None:
                    resources = self.client.resources(obj["uri"])
                sources.extend(("resource", r["uri"]) for r in resources)
            elif obj is not None:
                sources.append((kind, obj["uri"]))

    # -- command inputs and outputs

    def command_value(self, inp: CommandInput) -> Any:
        value: Any = inp.default_value
        if inp.type == "select-many" and isinstance(value, str):
            try:
                value = load_json(value, inp.name) if value.startswith("[") else [value]
            except ValueError:
                value = [value]
        if inp.name in self.values:
            value = self.values[inp.name]
        if inp.name in self.provided:
            value = self.provided[inp.name]
        if inp.required and value in (None, "", []):
            raise InputError(inp.name, "required input has no value")
        if inp.type == "boolean" and value not in (None, ""):
            truthy = str(value).lower() == "true"
            value = (inp.true_value or "true") if truthy else (inp.false_value or "false")
        return value

    def output(self, handler: OutputHandler) -> ResolvedOutput:
        output = self.c.output(handler.accepts_command_output or "")
        if output is None:
            raise XnatMlError(f"output handler {handler.name!r}: names no command output")
        target = handler.as_a_child_of or ""
        if target in self.objects:
            parent = self.objects[target]["uri"]
        elif any(h.name == target for h in self.w.output_handlers):
            parent = f"handler:{target}"
        else:
            value = self.wrapper_values.get(target)
            if not isinstance(value, str) or not value.startswith("/"):
                raise InputError(target, f"has no object for output handler {handler.name!r}")
            parent = value
        return ResolvedOutput(
            handler=handler,
            output=output,
            mount=output.mount or "",
            path=_substitute(output.path or "", self.keys).strip("/"),
            glob=_substitute(output.glob, self.keys) if output.glob else None,
            parent=parent,
            label=_substitute(handler.label, self.keys) if handler.label else None,
        )


# What each object input type accepts: the shapes of URI that can name it, and the kinds of
# object (by xsi type) it may be. An experiment URI can name any experiment, so the loaded
# object's real type is checked too (a scan URI is never a session; an assessor is never one).
_URI_SHAPES = {
    "Project": "Project", "Subject": "Subject", "Session": "Experiment",
    "SubjectAssessor": "Experiment", "ProjectAsset": "Experiment", "Scan": "Scan",
    "Assessor": "Assessor", "Resource": "Resource",
}  # fmt: skip
_REAL_KINDS = {"SubjectAssessor": ("Session", "SubjectAssessor")}


def object_uri(name: str, kind: str, value: str) -> str:
    """The URI an object input's value names (a bare ID is accepted for a project, subject or
    session, as XNAT's UI sends them); InputError naming the input when the value cannot name
    an object of `kind` (not a URI, or a URI of another kind of object)."""
    value = value.strip()
    if not value.startswith("/"):
        prefix = {"Project": "/projects/", "Subject": "/subjects/"}.get(kind)
        if _URI_SHAPES[kind] == "Experiment":
            prefix = "/experiments/"
        if prefix is None or "/" in value:
            raise InputError(name, f"{value!r} is not the URI of {_a(kind)}")
        value = prefix + value
    try:
        shape = parse_path(value).kind
    except UriError as exc:
        raise InputError(name, f"{value!r} is not an XNAT object URI ({exc.problem})") from None
    if shape != _URI_SHAPES[kind]:
        raise InputError(name, f"{value} is the URI of {_a(shape)}, not of {_a(kind)}")
    return value


def check_object_type(name: str, kind: str, xsi_type: str) -> None:
    """InputError naming the input when an object's real (xsi) type is not of `kind`; a type
    this service does not know (a site's own datatype) is left to the wrapper's matcher."""
    real = object_kind(xsi_type)
    if real is not None and real not in _REAL_KINDS.get(kind, (kind,)):
        raise InputError(name, f"the object is {_a(real)} ({xsi_type}), not {_a(kind)}")


def check_object_project(name: str, uri: str, owner: str | None, project: str) -> None:
    """InputError naming the input when the object it names is not in the launch project.

    XNAT also accepts objects shared into the project; the embedded server has no sharing."""
    if owner != project:
        raise InputError(
            name, f"{uri} belongs to project {owner!r}, not to {project!r} (the launch project)"
        )


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"


def _property(obj: dict, prop: str) -> Any:
    """`$.prop` of an object, as the Container Service reads derived-from-xnat-object-property."""
    if not prop:
        return None
    path = prop if prop.startswith(("$", "@")) else "@." + prop
    try:
        value = compile_path(path, 0).evaluate(obj)
    except (ValueError, re.error):
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value is MISSING:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _parsed(value: str | None, parser: str | None) -> str | None:
    """A derived value through the input's `parser`: kept only if the regex matches it whole
    (XNAT also tries the parser as an XPath on XML values; not supported here)."""
    if value is None or not parser:
        return value
    try:
        return value if re.fullmatch(parser, value) else None
    except re.error:
        return None


def _plain_text(value: Any) -> str:
    """A value as text outside the command line (environment, paths, labels, matchers)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _words(value: Any) -> list[str]:
    """A wrapper input's value as command-line piece: each value one literal word."""
    if value in (None, "", []):
        return []
    items = value if isinstance(value, list) else [value]
    return _joined([Literal(str(v)) for v in items], " ")


def _joined(parts: list[str], delimiter: str) -> list[str]:
    out: list[str] = []
    for part in parts:
        out += [delimiter, part] if out else [part]
    return out


def _command_line_piece(inp: CommandInput, value: Any) -> list[str]:
    """The value as it appears in the command line: flag, separator, multiple-delimiter. Flags,
    separators and boolean true/false values are the admin's text; every value is a Literal."""
    if value in (None, "", []):
        return []
    flag = inp.command_line_flag or ""
    sep = inp.command_line_separator if inp.command_line_separator is not None else " "
    prefix = [flag + sep] if flag else []
    if isinstance(value, list):
        items = [Literal(str(v)) for v in value]
        delimiter = inp.multiple_delimiter or "space"
        if delimiter == "flag" and flag:  # the flag before every value
            return [p for i, item in enumerate(items) for p in [" "] * bool(i) + [*prefix, item]]
        if delimiter == "quoted-space":  # one word holding every value
            return [*prefix, Literal(" ".join(items))]
        return [*prefix, *_joined(items, "," if delimiter == "comma" else " ")]
    if inp.type == "boolean":  # true-value / false-value: written by the admin
        return [*prefix, str(value)]
    return [*prefix, Literal(str(value))]


_PATH_BAD = re.compile(r"[\x00-\x1f:,]")


def _checked_path(what: str, path: str) -> str:
    """A mount path or working directory after substitution: absolute, no `..`, nothing a bind
    specification would read as a separator (`:` `,`) and no control characters."""
    if not path.startswith("/") or ".." in path.split("/") or _PATH_BAD.search(path):
        raise XnatMlError(f"{what}: {path!r} is not a plain absolute path")
    return path


def _substitute(template: str, keys: dict[str, str]) -> str:
    """Replace every replacement key at once (longest first), so values are never re-scanned."""
    if not template or not keys:
        return template
    pattern = re.compile("|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True)))
    return pattern.sub(lambda m: keys[m.group(0)], template)


def _holder(uri: str) -> str:
    """The object type of a resource's holder, by its URI (`Session` for an experiment)."""
    shape = parse_path(uri).kind
    return "Session" if shape == "Experiment" else shape
