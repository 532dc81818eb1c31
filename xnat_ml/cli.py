"""The `xnat-ml` command: a thin dispatcher; each stage package registers its own verbs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from xnat_ml import __version__
from xnat_ml.errors import XnatMlError

# Each module exposes `register(subparsers)`, adding its verbs with `set_defaults(func=...)`.
VERB_MODULES = (
    "xnat_ml.server.cli",
    "xnat_ml.sample.cli",
    "xnat_ml.imaging.cli",
    "xnat_ml.containers.cli",
    "xnat_ml.containers.batch_cli",
    "xnat_ml.events.cli",
    "xnat_ml.annotations.cli",
    "xnat_ml.datasets.cli",
    "xnat_ml.training.cli",
    "xnat_ml.inference.cli",
    "xnat_ml.inference.model_cli",  # adds to training's `model` group: after it
    "xnat_ml.dashboard.cli",
    "xnat_ml.monailabel.cli",
)


def add_verb_group(
    subparsers: argparse._SubParsersAction, name: str, help: str, description: str
) -> argparse._SubParsersAction:
    """A verb made of sub-verbs (`xnat-ml NAME VERB`); NAME alone prints its help, exit code 2."""
    group = subparsers.add_parser(name, help=help, description=description)
    group.set_defaults(func=lambda _args: group.print_help() or 2)
    return group.add_subparsers(dest=f"{name}_verb", metavar="VERB")


def verb_group(subparsers: argparse._SubParsersAction, name: str) -> argparse._SubParsersAction:
    """The sub-verbs of a group another verb module made, for a later module to add to."""
    group = subparsers.choices[name]
    return next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnat-ml",
        description="Train and run segmentation models on an XNAT archive.",
    )
    parser.add_argument("--version", action="version", version=f"xnat-ml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a broken install: say so, never drop its verbs silently
            raise XnatMlError(
                f"cannot load the verbs of {name} ({type(exc).__name__}: {exc})"
            ) from exc
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except XnatMlError as exc:
        print(f"xnat-ml: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # Alembic's INFO lines (plugins, each step) are noise at a server start
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except XnatMlError as exc:
        print(f"xnat-ml: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The server went away under the verb (or answered an error nobody put into words):
        # one line, not a traceback. Imported here: the client libraries are heavy.
        from xnat_ml.xnat.responses import connection_failure

        line = connection_failure(exc, getattr(args, "url", None) or os.environ.get("XNAT_HOST"))
        if line is None:
            raise
        print(f"xnat-ml: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
