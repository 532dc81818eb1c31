"""XNAT's Container Service, as a library: command JSON, validation, resolution, launching.

    from xnat_ml.containers import load_command, validate
    command = load_command(open("command_json/roi-to-mask.json", "rb").read())

Resolution (`containers.resolve`), staging and upload (`containers.launch`), backends
(`containers.backends`) and the server's job runner (`containers.service`) are imported from
their modules: they pull in HTTP clients that validating a file does not need.
"""

from xnat_ml.containers.command import Command, Problem, load_command, parse_command
from xnat_ml.containers.validate import validate

__all__ = ["Command", "Problem", "load_command", "parse_command", "validate"]
