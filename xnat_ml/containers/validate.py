"""Cross-field rules of the Container Service, applied to a parsed `Command`.

The rules are those of `Command.validate()` in NrgXnat/container-service (unique names, outputs on
known mounts, handlers for every output, `as-a-child-of` on a known, non-multiple input whose value
is a uri, select inputs with values, ...) plus the checks XNAT only makes at launch time, moved
forward so that a broken command fails at install: replacement keys the command line uses but no
input defines, inputs naming mounts or command inputs that do not exist, contexts that are not xsi
types, matchers that do not parse, derived inputs that break the XNAT hierarchy.
"""

from __future__ import annotations

import re

from xnat_ml.bounded_json import load_json
from xnat_ml.containers import xsitypes
from xnat_ml.containers.command import (
    GPU_RESOURCES,
    Command,
    CommandInput,
    DerivedInput,
    Problem,
    Wrapper,
    WrapperInput,
)
from xnat_ml.containers.matcher import MatcherError, compile_matcher

COMMAND_TYPES = ("docker", "docker-setup", "docker-wrapup")
VISIBILITIES = ("public", "private", "protected")
INPUT_TYPES = ("string", "boolean", "number", "select-one", "select-many", "file")
MULTIPLE_DELIMITERS = ("quoted-space", "space", "comma", "flag")
OBJECT_TYPES = (
    "Project", "ProjectAsset", "Subject", "SubjectAssessor", "Session", "Scan", "Assessor",
    "Resource",
)  # fmt: skip
FILE_TYPES = ("File", "File[]", "Directory")
VALUE_TYPES = ("string", "boolean", "number", "file")
WRAPPER_INPUT_TYPES = (*VALUE_TYPES, *OBJECT_TYPES, *FILE_TYPES, "Config")
HANDLER_TYPES = ("Resource", "Assessor", "Scan")
RESERVED_ENV = ("XNAT_HOST", "XNAT_USER", "XNAT_PASS")

# Properties each XNAT object exposes in the Container Service's JSON (model/xnat/*.java).
_BASE_PROPS = ("id", "label", "xsiType", "uri", "directory", "datatype-string")
OBJECT_PROPERTIES = {
    "Project": (*_BASE_PROPS, "name"),
    "ProjectAsset": (*_BASE_PROPS, "project-id"),
    "Subject": (*_BASE_PROPS, "project-id", "group", "gender", "handedness"),
    "SubjectAssessor": (*_BASE_PROPS, "project-id", "subject-id"),
    "Session": (*_BASE_PROPS, "project-id", "subject-id", "visit-id", "shared-from-project-id",
                "modality", "date"),
    "Scan": (*_BASE_PROPS, "integer-id", "scan-type", "project-id", "session-id", "frames", "note",
             "modality", "quality", "scanner", "series-description", "uid", "start-time"),
    "Assessor": (*_BASE_PROPS, "project-id", "session-id", "name"),
    "Resource": (*_BASE_PROPS, "integer-id", "parent-uri"),
    "File": ("name", "path", "uri", "format", "content", "size", "checksum", "tags"),
    "File[]": ("name", "path", "uri"),
    "Directory": ("path", "uri", "directory"),
    "Config": ("value",),
}  # fmt: skip

# child type -> parent types it can be derived from (both directions of the XNAT hierarchy allowed)
_DOWN = {
    "Subject": {"Project"},
    "ProjectAsset": {"Project"},
    "Session": {"Project", "Subject"},
    "SubjectAssessor": {"Project", "Subject"},
    "Scan": {"Project", "Subject", "Session"},
    "Assessor": {"Project", "ProjectAsset", "Subject", "Session"},
    "Resource": {"Project", "ProjectAsset", "Subject", "Session", "Assessor", "Scan",
                 "SubjectAssessor"},
}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_HASH_KEY = re.compile(r"#[A-Za-z0-9_.\-]+#")
_IMAGE_TAG = re.compile(r".+:[a-zA-Z0-9_.-]+$")


def can_derive(child_type: str, parent_type: str) -> bool:
    """May an input of `child_type` be derived from one of `parent_type`?"""
    if parent_type not in (*OBJECT_TYPES, *FILE_TYPES):
        return False
    if child_type in VALUE_TYPES or child_type == "Config":
        return True
    if child_type in FILE_TYPES:
        return parent_type != "Subject"
    return parent_type in _DOWN.get(child_type, ()) or child_type in _DOWN.get(parent_type, ())


def validate(command: Command) -> list[Problem]:
    """Every rule violation of a parsed command, errors and warnings, each naming its field."""
    v = _Validator(command)
    v.run()
    return v.problems


class _Validator:
    def __init__(self, command: Command) -> None:
        self.c = command
        self.problems: list[Problem] = []

    def err(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, warning=True))

    def _gpus(self, c: Command) -> None:
        """`gpus` is XNAT's string: "all" or a count; `runtime` a plain name (e.g. nvidia). The
        GPU generic resource should ask for as many as `gpus`: standalone Docker reads `gpus`,
        Swarm and Kubernetes the generic resource."""
        asked = (c.gpus or "").strip().lower()
        if c.gpus is not None and asked != "all" and not asked.isdigit():
            self.err("gpus", f"{c.gpus!r} is neither 'all' nor a whole number")
        if c.runtime is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", c.runtime):
            self.err("runtime", f"{c.runtime!r} is not a container runtime name")
        for name, value in c.generic_resources.items():
            if name.lower() in GPU_RESOURCES and asked.isdigit() and value.isdigit() and (
                int(value) != int(asked)
            ):
                self.warn(f"generic-resources.{name}",
                          f"asks for {value} GPU(s) and gpus for {c.gpus}: standalone Docker "
                          "reads gpus, Swarm and Kubernetes this")  # fmt: skip

    def run(self) -> None:
        c = self.c
        if not c.name or not c.name.strip():
            self.err("name", "must not be blank")
        if c.schema_version not in (None, "1.0"):
            self.err("schema-version", f"{c.schema_version!r} is not supported (only '1.0')")
        if c.type not in COMMAND_TYPES:
            self.err("type", f"{c.type!r} is not one of {', '.join(COMMAND_TYPES)}")
        if not c.image:
            self.warn("image", "blank: the image must be given when the command is installed")
        elif not _IMAGE_TAG.match(c.image):
            self.warn("image", f"{c.image!r} has no tag; the Container Service asks for image:tag")
        if c.visibility is not None and c.visibility.lower() not in VISIBILITIES:
            self.err("visibility", f"{c.visibility!r} is not one of {', '.join(VISIBILITIES)}")
        for key in ("reserve-memory", "limit-memory", "shm-size", "limit-cpu"):
            value = getattr(c, key.replace("-", "_"))
            if value is not None and value <= 0:
                self.err(key, "must be positive")
        if c.reserve_memory and c.limit_memory and c.reserve_memory > c.limit_memory:
            self.err("reserve-memory", "is larger than limit-memory")
        for name, value in c.generic_resources.items():
            if not value.isdigit():
                self.err(f"generic-resources.{name}", f"{value!r} is not a whole number")
        self._gpus(c)
        for name in c.environment_variables:
            if name in RESERVED_ENV:
                self.err(f"environment-variables.{name}", "is reserved: XNAT sets it at launch")
            elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.err(f"environment-variables.{name}", "is not a valid variable name")
        if c.type != "docker":
            for key in ("mounts", "inputs", "outputs", "xnat", "environment_variables", "ports"):
                if getattr(c, key):
                    self.err(key.replace("_", "-"), f"a {c.type} command cannot declare any")
            return
        if not (c.command_line or "").strip():
            self.warn("command-line", "blank: the image's own entrypoint and cmd will run")
        self.check_mounts()
        self.check_inputs()
        self.check_outputs()
        self.check_keys_used()
        names: set[str] = set()
        for i, wrapper in enumerate(c.xnat):
            path = f"xnat[{i}]"
            if not wrapper.name.strip():
                self.err(f"{path}.name", "must not be blank")
            elif wrapper.name in names:
                self.err(f"{path}.name", f"{wrapper.name!r} is not unique")
            names.add(wrapper.name)
            self.check_wrapper(wrapper, path)

    def check_mounts(self) -> None:
        seen: set[str] = set()
        for i, mount in enumerate(self.c.mounts):
            path = f"mounts[{i}]"
            self._name(mount.name, f"{path}.name", seen, "mount")
            if not mount.path:
                self.err(f"{path}.path", "must not be blank")
            elif not mount.path.startswith("/"):
                self.err(f"{path}.path", f"{mount.path!r} is not an absolute path")
            elif ".." in mount.path.split("/"):
                self.err(f"{path}.path", f"{mount.path!r} contains '..'")

    def check_inputs(self) -> None:
        seen: set[str] = set()
        for i, inp in enumerate(self.c.inputs):
            path = f"inputs[{i}]"
            self._name(inp.name, f"{path}.name", seen, "input")
            if inp.type not in INPUT_TYPES:
                self.err(f"{path}.type", f"{inp.type!r} is not one of {', '.join(INPUT_TYPES)}")
            if inp.multiple_delimiter is not None and inp.multiple_delimiter not in (
                *MULTIPLE_DELIMITERS,
                "",
            ):
                self.err(
                    f"{path}.multiple-delimiter",
                    f"{inp.multiple_delimiter!r} is not one of {', '.join(MULTIPLE_DELIMITERS)}",
                )
            is_select = inp.type in ("select-one", "select-many")
            if is_select and not inp.select_values:
                self.err(f"{path}.select-values", f"a {inp.type} input needs select-values")
            elif inp.select_values and not is_select:
                self.err(f"{path}.select-values", f"set, but type is {inp.type!r}, not a select")
            self._check_default(inp, path)
            self._matcher(inp.matcher, f"{path}.matcher")

    def _check_default(self, inp: CommandInput, path: str) -> None:
        default = inp.default_value
        if default is None:
            return
        where = f"{path}.default-value"
        if inp.type == "boolean" and default.lower() not in ("true", "false", ""):
            self.err(where, f"{default!r} is not true or false")
        elif inp.type == "number" and default != "":
            try:
                float(default)
            except ValueError:
                self.err(where, f"{default!r} is not a number")
        elif inp.select_values:
            values = [default]
            if inp.type == "select-many" and default.startswith("["):
                try:
                    values = load_json(default, where)
                except ValueError:
                    values = [default]
            missing = [v for v in values if v not in inp.select_values]
            if missing:
                self.err(where, f"{missing[0]!r} is not one of the select-values")

    def check_outputs(self) -> None:
        seen: set[str] = set()
        for i, out in enumerate(self.c.outputs):
            path = f"outputs[{i}]"
            self._name(out.name, f"{path}.name", seen, "output")
            if not out.mount:
                self.err(f"{path}.mount", "must not be blank")
            elif self.c.mount(out.mount) is None:
                self.err(f"{path}.mount", f"{out.mount!r} is not a mount of this command")
            for key, value in (("path", out.path), ("glob", out.glob)):
                if value and (value.startswith("/") or ".." in re.split(r"[/\\]", value)):
                    self.err(f"{path}.{key}", f"{value!r} must stay inside the mount")

    def check_keys_used(self) -> None:
        """Replacement keys in the command's templates must be defined by some input."""
        command_keys = {i.key for i in self.c.inputs}
        templates = [("command-line", self.c.command_line or "")]
        templates += [
            (f"environment-variables.{k}", v) for k, v in self.c.environment_variables.items()
        ]
        templates += [(f"outputs[{i}].path", o.path or "") for i, o in enumerate(self.c.outputs)]
        templates += [(f"outputs[{i}].glob", o.glob or "") for i, o in enumerate(self.c.outputs)]
        templates += [("working-directory", self.c.working_directory or "")]
        wrappers = self.c.xnat or [Wrapper(name="")]
        for where, text in templates:
            for key in sorted(set(_HASH_KEY.findall(text))):
                if key in command_keys:
                    continue
                lacking = [w.name for w in wrappers if key not in {i.key for i in w.inputs}]
                if len(lacking) == len(wrappers):
                    self.err(where, f"replacement key {key} is not defined by any input")
                elif lacking:
                    self.err(where, f"replacement key {key} is not defined in wrapper "
                             f"{lacking[0]!r}")  # fmt: skip
        line = self.c.command_line or ""
        for i, inp in enumerate(self.c.inputs):
            if inp.key not in line and not any(inp.key in t for _, t in templates[1:]):
                self.warn(f"inputs[{i}]", f"replacement key {inp.key} is used nowhere")

    def check_wrapper(self, w: Wrapper, path: str) -> None:
        if not w.contexts:
            self.warn(f"{path}.contexts", "empty: XNAT will offer this wrapper nowhere")
        kinds = set()
        for j, ctx in enumerate(w.contexts):
            if not xsitypes.is_known(ctx):
                self.err(f"{path}.contexts[{j}]", f"{ctx!r} is not a known XNAT xsi type")
            else:
                kinds.add(xsitypes.object_kind(ctx))
        external_kinds = {i.type for i in w.external_inputs}
        for kind in sorted(kinds - external_kinds):
            self.warn(
                f"{path}.external-inputs", f"no input of type {kind} takes the context object"
            )
        inputs: dict[str, WrapperInput] = {}
        multiple: set[str] = set()
        for key, items in (
            ("external-inputs", w.external_inputs),
            ("derived-inputs", w.derived_inputs),
        ):
            for j, inp in enumerate(items):
                ipath = f"{path}.{key}[{j}]"
                if not inp.name:
                    self.err(f"{ipath}.name", "must not be blank")
                elif not _NAME.match(inp.name):
                    self.err(f"{ipath}.name", f"{inp.name!r} may contain only A-Z a-z 0-9 _ -")
                elif inp.name in inputs:
                    self.err(f"{ipath}.name", f"{inp.name!r} is not unique in this wrapper")
                self.check_wrapper_input(inp, ipath, inputs, w)
                inputs.setdefault(inp.name, inp)
                if isinstance(inp, DerivedInput) and inp.multiple:
                    multiple.add(inp.name)
        handlers: set[str] = set()
        handled: set[str] = set()
        for j, h in enumerate(w.output_handlers):
            hpath = f"{path}.output-handlers[{j}]"
            if not h.name:
                self.err(f"{hpath}.name", "must not be blank")
            elif not _NAME.match(h.name):
                self.err(f"{hpath}.name", f"{h.name!r} may contain only A-Z a-z 0-9 _ -")
            elif h.name in handlers:
                self.err(f"{hpath}.name", f"{h.name!r} is not unique in this wrapper")
            if h.type not in HANDLER_TYPES:
                self.err(f"{hpath}.type", f"{h.type!r} is not one of {', '.join(HANDLER_TYPES)}")
            if h.type == "Resource" and not h.label:
                self.err(f"{hpath}.label", "a Resource handler needs the resource label")
            if not h.accepts_command_output:
                self.err(f"{hpath}.accepts-command-output", "must not be blank")
            elif self.c.output(h.accepts_command_output) is None:
                self.err(f"{hpath}.accepts-command-output",
                         f"{h.accepts_command_output!r} is not a command output")  # fmt: skip
            else:
                handled.add(h.accepts_command_output)
            self.check_target(h.as_a_child_of, f"{hpath}.as-a-child-of", inputs, handlers, multiple)
            handlers.add(h.name)
        for out in self.c.outputs:
            if out.name not in handled:
                self.err(f"{path}.output-handlers", f"command output {out.name!r} has no handler")

    def check_wrapper_input(
        self, inp: WrapperInput, path: str, earlier: dict[str, WrapperInput], w: Wrapper
    ) -> None:
        if inp.type not in WRAPPER_INPUT_TYPES:
            self.err(f"{path}.type", f"{inp.type!r} is not one of {', '.join(WRAPPER_INPUT_TYPES)}")
        self._matcher(inp.matcher, f"{path}.matcher")
        target = inp.provides_value_for_command_input
        if target:
            cmd_input = self.c.input(target)
            if cmd_input is None:
                self.err(f"{path}.provides-value-for-command-input",
                         f"{target!r} is not a command input")  # fmt: skip
            elif cmd_input.select_values:
                self.err(f"{path}.provides-value-for-command-input",
                         f"{target!r} is a select input; XNAT inputs must not set it")  # fmt: skip
        mount = inp.provides_files_for_command_mount
        if mount:
            if self.c.mount(mount) is None:
                self.err(f"{path}.provides-files-for-command-mount",
                         f"{mount!r} is not a mount of this command")  # fmt: skip
            elif inp.type not in (*OBJECT_TYPES, "File", "Directory"):
                self.err(f"{path}.provides-files-for-command-mount",
                         f"a {inp.type} input has no files to mount")  # fmt: skip
        if inp.via_setup_command and not mount:
            self.err(f"{path}.via-setup-command", "set on an input that mounts no files")
        if not isinstance(inp, DerivedInput):
            return
        parent_name = inp.derived_from_wrapper_input
        where = f"{path}.derived-from-wrapper-input"
        if not parent_name:
            self.err(where, "must not be blank")
            return
        if parent_name == inp.name:
            self.err(where, f"{inp.name!r} is derived from itself")
            return
        parent = earlier.get(parent_name)
        if parent is None:
            later = w.input(parent_name) is not None
            self.err(where, f"{parent_name!r} is not a wrapper input"
                     + (" defined before this one" if later else ""))  # fmt: skip
            return
        if parent.type not in (*OBJECT_TYPES, *FILE_TYPES):
            self.err(where, f"{parent_name!r} is a {parent.type} input, not an XNAT object")
        elif not can_derive(inp.type, parent.type):
            self.err(f"{path}.type", f"a {inp.type} cannot be derived from a {parent.type}")
        prop = inp.derived_from_xnat_object_property
        source = inp.type if inp.type in OBJECT_PROPERTIES else parent.type
        if inp.type in VALUE_TYPES:
            source = parent.type
        if prop and source in OBJECT_PROPERTIES and prop not in OBJECT_PROPERTIES[source]:
            self.err(f"{path}.derived-from-xnat-object-property",
                     f"{prop!r} is not a property of a {source}")  # fmt: skip
        if inp.type in VALUE_TYPES and not prop:
            self.err(f"{path}.derived-from-xnat-object-property",
                     f"a {inp.type} from a {parent.type} needs a property to read")  # fmt: skip
        if inp.multiple:
            if mount:
                self.err(f"{path}.multiple", "a multiple input cannot provide files for a mount")
            if not inp.provides_value_for_command_input:
                self.err(f"{path}.multiple", "a multiple input must provide a command input value")

    def check_target(
        self,
        target: str | None,
        where: str,
        inputs: dict[str, WrapperInput],
        handlers: set[str],
        multiple: set[str],
    ) -> None:
        if not target:
            self.err(where, "must not be blank")
            return
        if target in handlers:
            return
        inp = inputs.get(target)
        if inp is None:
            self.err(where, f"{target!r} is not a wrapper input")
        elif target in multiple:
            self.err(where, f"{target!r} allows multiple values; outputs need exactly one parent")
        elif inp.type not in OBJECT_TYPES:
            self.err(where, f"{target!r} is a {inp.type} input, not an XNAT object to upload into")
        elif isinstance(inp, DerivedInput) and inp.derived_from_xnat_object_property not in (
            None,
            "uri",
        ):
            prop = inp.derived_from_xnat_object_property
            self.err(where, f"{target!r} resolves to its {prop!r}; uploading needs its uri")

    def _name(self, name: str, where: str, seen: set[str], what: str) -> None:
        if not name:
            self.err(where, "must not be blank")
        elif not _NAME.match(name):
            self.err(where, f"{name!r} may contain only A-Z a-z 0-9 _ -")
        elif name in seen:
            self.err(where, f"{what} name {name!r} is not unique")
        seen.add(name)

    def _matcher(self, matcher: str | None, where: str) -> None:
        if not matcher:
            return
        try:
            compile_matcher(matcher)
        except MatcherError as exc:
            self.err(where, f"{matcher[:60]!r} does not parse: {exc}")
