"""XNAT's Container Service, as a library: command JSON, validation, resolution, launching.

    from xnat_ml.containers import load_command
    from xnat_ml.containers.validate import validate
    command = load_command(open("command_json/roi-to-mask.json", "rb").read())

Resolution (`containers.resolve`), staging and upload (`containers.launch`), backends
(`containers.backends`) and the server's job runner (`containers.service`) are imported from
their modules: they pull in HTTP clients that validating a file does not need. The names below
load lazily (PEP 562), so registering the `commands`, `batch` and `jobs` verbs costs nothing.
`validate` is not among them: a lazy name would be shadowed by its submodule of the same name.
"""

__all__ = ["Command", "Problem", "load_command", "parse_command"]


def __getattr__(name: str):
    if name in __all__:
        from xnat_ml.containers import command

        return getattr(command, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
