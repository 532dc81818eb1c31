"""`xnat-ml commands ...`: check Container Service command JSON before installing it."""

from __future__ import annotations

import argparse
from pathlib import Path

from xnat_ml.containers.command import read_command_file


def register(subparsers: argparse._SubParsersAction) -> None:
    commands = subparsers.add_parser(
        "commands",
        help="work with Container Service command JSON",
        description="Work with XNAT Container Service command definitions (command JSON).",
    )
    verbs = commands.add_subparsers(dest="commands_verb", metavar="VERB")
    validate = verbs.add_parser(
        "validate",
        help="check command JSON files against the Container Service's rules",
        description=(
            "Check each FILE against the Container Service's rules (schema-version 1.0): unknown "
            "fields, wrong types, undefined replacement keys, mounts/inputs/outputs that wrappers "
            "name but the command lacks, as-a-child-of targets, contexts, matchers. Prints one "
            "line per problem as FILE: FIELD.PATH: PROBLEM; exits 1 if any file has an error."
        ),
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--quiet", "-q", action="store_true", help="do not print warnings")
    validate.set_defaults(func=_validate)
    commands.set_defaults(func=lambda _args: commands.print_help() or 2)


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        command, problems = read_command_file(path)
        errors = [p for p in problems if not p.warning]
        for problem in problems:
            if problem.warning and args.quiet:
                continue
            print(f"{path}: {problem}")
        if errors:
            failed += 1
        elif not args.quiet:
            wrappers = ", ".join(w.name for w in command.xnat) or "no wrappers"
            print(f"{path}: ok: command {command.name!r} ({wrappers})")
    return 1 if failed else 0
