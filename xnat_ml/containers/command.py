"""The Container Service command JSON (schema-version 1.0) as Python objects, parsed strictly.

`parse_command` turns JSON into a `Command` and reports every field-level problem with its path
(`xnat[0].derived-inputs[2].type: ...`); `validate.py` adds the cross-field rules. Field names,
defaults and legacy aliases follow NrgXnat/container-service's `Command.java` so that a file valid
here installs as is in a real XNAT.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from xnat_ml.bounded_json import JsonDocumentError, load_json
from xnat_ml.errors import XnatMlError

MAX_COMMAND_BYTES = 1_000_000  # a real command JSON is a few KB; refuse to parse absurd ones


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{'warning: ' if self.warning else ''}{self.path}: {self.message}"


#: generic-resources that name GPUs: XNAT's Swarm and Kubernetes backends read `nvidia.com/gpu`;
#: `gpu` is what xnat-ml's commands asked for before they carried `gpus`
GPU_RESOURCES = ("gpu", "nvidia.com/gpu", "amd.com/gpu")
ALL_GPUS = -1  # `"gpus": "all"`: every GPU of the host (Docker's count -1)


def _f(key: str, kind: str = "str", default: Any = None, **kw: Any) -> Any:
    """A dataclass field that knows its JSON key and how to coerce the JSON value."""
    if isinstance(default, list | dict):
        factory = type(default)
        return field(default_factory=factory, metadata={"key": key, "kind": kind, **kw})
    return field(default=default, metadata={"key": key, "kind": kind, **kw})


@dataclass
class Mount:
    name: str = _f("name")
    writable: bool = _f("writable", "bool", False)
    path: str | None = _f("path")


@dataclass
class _Input:
    """What command inputs and wrapper inputs share: a typed, named value and its template key."""

    name: str = _f("name")
    label: str | None = _f("label")
    description: str | None = _f("description")
    type: str = _f("type", default="string")
    matcher: str | None = _f("matcher")
    default_value: str | None = _f("default-value", "scalar")
    replacement_key: str | None = _f("replacement-key")
    sensitive: bool = _f("sensitive", "bool", False)

    @property
    def key(self) -> str:
        return self.replacement_key or f"#{self.name}#"


@dataclass
class CommandInput(_Input):
    required: bool = _f("required", "bool", False)
    command_line_flag: str | None = _f("command-line-flag")
    command_line_separator: str | None = _f("command-line-separator")
    true_value: str | None = _f("true-value", "scalar")
    false_value: str | None = _f("false-value", "scalar")
    select_values: list[str] = _f("select-values", "strlist", [])
    multiple_delimiter: str | None = _f("multiple-delimiter")


@dataclass
class CommandOutput:
    name: str = _f("name")
    description: str | None = _f("description")
    required: bool = _f("required", "bool", True)
    mount: str | None = _f("mount")
    path: str | None = _f("path")
    glob: str | None = _f("glob")


@dataclass
class WrapperInput(_Input):
    """An external wrapper input: its value comes from the user or the launch context."""

    user_settable: bool | None = _f("user-settable", "bool")
    required: bool = _f("required", "bool", True)
    load_children: bool = _f("load-children", "bool", True)
    provides_value_for_command_input: str | None = _f("provides-value-for-command-input")
    provides_files_for_command_mount: str | None = _f("provides-files-for-command-mount")
    via_setup_command: str | None = _f("via-setup-command")

    derived = False


@dataclass
class DerivedInput(WrapperInput):
    """A wrapper input whose value comes from another wrapper input (parent or child object)."""

    derived_from_wrapper_input: str | None = _f(
        "derived-from-wrapper-input", aliases=("derived-from-xnat-input",)
    )
    derived_from_xnat_object_property: str | None = _f("derived-from-xnat-object-property")
    multiple: bool = _f("multiple", "bool", False)
    parser: str | None = _f("parser")

    derived = True


@dataclass
class OutputHandler:
    name: str = _f("name")
    accepts_command_output: str | None = _f("accepts-command-output")
    as_a_child_of: str | None = _f(
        "as-a-child-of", aliases=("as-a-child-of-wrapper-input", "as-a-child-of-xnat-input")
    )
    via_wrapup_command: str | None = _f("via-wrapup-command")
    type: str = _f("type", default="Resource")
    xsi_type: str | None = _f("xsi-type")
    label: str | None = _f("label")
    format: str | None = _f("format")
    description: str | None = _f("description")
    content: str | None = _f("content")
    tags: list[str] = _f("tags", "strlist", [])


@dataclass
class Wrapper:
    name: str = _f("name")
    id: int | None = _f("id", "int")
    label: str | None = _f("label")
    description: str | None = _f("description")
    contexts: list[str] = _f("contexts", "strlist", [])
    external_inputs: list[WrapperInput] = _f("external-inputs", WrapperInput, [])
    derived_inputs: list[DerivedInput] = _f("derived-inputs", DerivedInput, [])
    output_handlers: list[OutputHandler] = _f("output-handlers", OutputHandler, [])

    @property
    def inputs(self) -> list[WrapperInput]:
        return [*self.external_inputs, *self.derived_inputs]

    def input(self, name: str) -> WrapperInput | None:
        return next((i for i in self.inputs if i.name == name), None)


@dataclass
class Command:
    name: str = _f("name")
    id: int | None = _f("id", "int")
    label: str | None = _f("label")
    description: str | None = _f("description")
    version: str | None = _f("version")
    schema_version: str | None = _f("schema-version")
    info_url: str | None = _f("info-url")
    image: str | None = _f("image")
    container_name: str | None = _f("container-name")
    type: str = _f("type", default="docker")
    index: str | None = _f("index")
    hash: str | None = _f("hash")
    working_directory: str | None = _f("working-directory")
    command_line: str | None = _f("command-line")
    command_metadata: Any = _f("command-metadata", "any")
    override_entrypoint: bool | None = _f("override-entrypoint", "bool")
    mounts: list[Mount] = _f("mounts", Mount, [])
    environment_variables: dict[str, str] = _f("environment-variables", "strmap", {})
    ports: dict[str, str] = _f("ports", "strmap", {})
    inputs: list[CommandInput] = _f("inputs", CommandInput, [])
    outputs: list[CommandOutput] = _f("outputs", CommandOutput, [])
    xnat: list[Wrapper] = _f("xnat", Wrapper, [])
    reserve_memory: int | None = _f("reserve-memory", "int")
    limit_memory: int | None = _f("limit-memory", "int")
    limit_cpu: float | None = _f("limit-cpu", "float")
    runtime: str | None = _f("runtime")
    ipc_mode: str | None = _f("ipc-mode")
    auto_remove: bool | None = _f("auto-remove", "bool")
    shm_size: int | None = _f("shm-size", "int")
    network: str | None = _f("network")
    container_labels: dict[str, str] = _f("container-labels", "strmap", {})
    gpus: str | None = _f("gpus")
    generic_resources: dict[str, str] = _f("generic-resources", "strmap", {})
    ulimits: dict[str, str] = _f("ulimits", "strmap", {})
    secrets: list[Any] = _f("secrets", "anylist", [])
    visibility: str | None = _f("visibility")

    def gpu_count(self) -> int:
        """GPUs asked for: `gpus` ("all": ALL_GPUS, a whole number), else the largest GPU entry
        of `generic-resources` (what Swarm and Kubernetes read); 0 for none."""
        asked = (self.gpus or "").strip().lower()
        if asked == "all":
            return ALL_GPUS
        if asked.isdigit():
            return int(asked)
        counts = [int(count) for name, count in self.generic_resources.items()
                  if name.lower() in GPU_RESOURCES and str(count).isdigit()]  # fmt: skip
        return max(counts, default=0)

    def wrapper(self, name_or_id: str | int) -> Wrapper | None:
        for w in self.xnat:
            if w.name == name_or_id or (w.id is not None and str(w.id) == str(name_or_id)):
                return w
        return None

    def input(self, name: str) -> CommandInput | None:
        return next((i for i in self.inputs if i.name == name), None)

    def mount(self, name: str) -> Mount | None:
        return next((m for m in self.mounts if m.name == name), None)

    def output(self, name: str) -> CommandOutput | None:
        return next((o for o in self.outputs if o.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The command as canonical JSON (legacy keys renamed, defaults filled in)."""
        return _to_dict(self)


def _all_keys() -> set[str]:
    keys: set[str] = set()
    for cls in (Mount, CommandInput, CommandOutput, DerivedInput, OutputHandler, Wrapper, Command):
        for f in fields(cls):
            keys.add(f.metadata["key"])
            keys.update(f.metadata.get("aliases", ()))
    return keys


_ANY_KNOWN_KEY = _all_keys()


def _to_dict(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            out[f.metadata["key"]] = _to_dict(value)
        return out
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return obj


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)


def _coerce(kind: Any, value: Any, path: str, problems: list[Problem]) -> Any:
    """Coerce one JSON value the way Jackson would for Command.java; report what cannot be."""

    def bad(expected: str) -> None:
        problems.append(Problem(path, f"expected {expected}, got {json.dumps(value)[:60]}"))

    if value is None:
        return None
    if isinstance(kind, type):
        if not isinstance(value, list):
            bad("a list")
            return []
        out = []
        for i, item in enumerate(value):
            parsed = parse_object(kind, item, f"{path}[{i}]", problems)
            if parsed is not None:
                out.append(parsed)
        return out
    if kind == "any":
        return value
    if kind == "anylist":
        if isinstance(value, list):
            return value
        bad("a list")
        return []
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _scalar_text(value)
        bad("a string")
        return None
    if kind == "scalar":
        if isinstance(value, str | int | float | bool):
            return value if isinstance(value, str) else _scalar_text(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return json.dumps(value)
        bad("a string, number or boolean")
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        bad("true or false")
        return None
    if kind in ("int", "float"):
        number: Any = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, int | float):
            bad("a number")
            return None
        if kind == "int":
            if number != int(number):
                bad("a whole number")
                return None
            return int(number)
        return float(number)
    if kind == "strlist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad("a list of strings")
            return []
        return list(value)
    if kind == "strmap":
        if not isinstance(value, dict):
            bad("an object of name: value")
            return {}
        out_map = {}
        for k, v in value.items():
            if not isinstance(v, str | int | float | bool) or v is None:
                problems.append(Problem(f"{path}.{k}", "expected a string value"))
                continue
            out_map[k] = v if isinstance(v, str) else _scalar_text(v)
        return out_map
    raise AssertionError(kind)


def parse_object(cls: type, data: Any, path: str, problems: list[Problem]) -> Any:
    """Build a dataclass from a JSON object; unknown keys are errors, misplaced ones warnings."""
    label = cls.__name__
    if not isinstance(data, dict):
        problems.append(
            Problem(
                path or "(file)", f"expected a JSON object ({label}), got {type(data).__name__}"
            )
        )
        return None
    by_key = {}
    for f in fields(cls):
        by_key[f.metadata["key"]] = f
        for alias in f.metadata.get("aliases", ()):
            by_key[alias] = f
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = by_key.get(key)
        where = f"{path}.{key}" if path else key
        if f is None:
            if key in _ANY_KNOWN_KEY:
                problems.append(
                    Problem(
                        where,
                        f"not a field of {_human(cls)}; the Container Service ignores it",
                        warning=True,
                    )
                )
            else:
                problems.append(Problem(where, f"unknown field of {_human(cls)}"))
            continue
        if f.name in values and key != f.metadata["key"]:
            continue  # the canonical key wins over a legacy alias
        coerced = _coerce(f.metadata["kind"], value, where, problems)
        if coerced is not None:
            values[f.name] = coerced
    for f in fields(cls):
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING:
            values[f.name] = None
    obj = cls(**values)
    if obj.name is None:
        obj.name = ""
    return obj


def _human(cls: type) -> str:
    return {
        Mount: "a mount",
        CommandInput: "a command input",
        CommandOutput: "a command output",
        WrapperInput: "an external input",
        DerivedInput: "a derived input",
        OutputHandler: "an output handler",
        Wrapper: "a wrapper",
        Command: "a command",
    }[cls]


def parse_command(data: Any) -> tuple[Command | None, list[Problem]]:
    """Parse decoded JSON (or JSON text/bytes) into a Command plus field-level problems."""
    problems: list[Problem] = []
    if isinstance(data, bytes | str):
        data, problem = _decode(data)
        if problem:
            return None, [problem]
    command = parse_object(Command, data, "", problems)
    return command, problems


def _decode(text: bytes | str) -> tuple[Any, Problem | None]:
    try:
        return load_json(text, "command JSON", max_bytes=MAX_COMMAND_BYTES), None
    except JsonDocumentError as exc:
        return None, Problem("(file)", str(exc))


def read_command_file(path: Path) -> tuple[Command | None, list[Problem]]:
    """Read, parse and validate one file; problems name the field path."""
    from xnat_ml.containers.validate import validate

    try:
        size = path.stat().st_size
        if size > MAX_COMMAND_BYTES:
            return None, [
                Problem("(file)", f"larger than {MAX_COMMAND_BYTES} bytes; not a command")
            ]
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem("(file)", f"cannot read ({exc.strerror or exc})")]
    command, problems = parse_command(raw)
    if command is not None:
        problems += validate(command)
    return command, problems


def load_command(source: Any, what: str = "command") -> Command:
    """Parse and validate; raise XnatMlError listing every error (warnings are ignored)."""
    from xnat_ml.containers.validate import validate

    command, problems = parse_command(source)
    if command is not None:
        problems += validate(command)
    errors = [p for p in problems if not p.warning]
    if errors or command is None:
        detail = "; ".join(str(p) for p in errors[:20])
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise XnatMlError(f"{what}: invalid command JSON: {detail}{more}")
    return command
