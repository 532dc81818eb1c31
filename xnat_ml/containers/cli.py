"""`xnat-ml commands ...`: check Container Service command JSON, install the shipped commands on
an XNAT, run one by hand."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from xnat_ml.cli import add_verb_group
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.cliargs import add_connection_arguments, login_from_args

# Command parsing, validation and the HTTP client load inside the handlers: `xnat-ml` registers
# every verb module before dispatching, and the other verbs should not pay for them.


def register(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers,
        "commands",
        help="work with Container Service command JSON",
        description="Work with XNAT Container Service command definitions (command JSON).",
    )
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
    label = verbs.add_parser(
        "label",
        help="print command JSON files as the org.nrg.commands label of an image",
        description=(
            "Validate each FILE and print them as one compact JSON array: the value of the "
            "image label org.nrg.commands, from which XNAT's Container Service installs an "
            "image's commands when an admin adds the image. container_images/xnat-ml/Dockerfile "
            "takes it as the build argument XNAT_COMMANDS (`make image` passes it)."
        ),
    )
    label.add_argument("files", nargs="+", type=Path, metavar="FILE")
    label.set_defaults(func=_label)
    install = verbs.add_parser(
        "install",
        help="install the shipped commands on an XNAT (site admin) and enable their wrappers",
        description=(
            "Install the commands of command_json/ (all, or those NAMEd) on the XNAT's Container "
            "Service, one POST /xapi/commands each, skipping those already installed (same name "
            "and version); with --enable, turn every wrapper of them on site-wide and, with "
            "--project, in that project. --cpu-only installs them without GPU requests (gpus, "
            "GPU generic-resources, the nvidia runtime), for sites with no GPU. Needs a site "
            "administrator; running it again changes nothing. Server and user come from "
            "--url/--user/--password or XNAT_HOST/XNAT_USER/XNAT_PASS."
        ),
    )
    install.add_argument("names", nargs="*", metavar="NAME", help="command names (default: all)")
    install.add_argument("--project", metavar="P", help="also enable the wrappers in project P")
    install.add_argument("--enable", action="store_true", help="enable the wrappers")
    install.add_argument("--cpu-only", action="store_true", help="drop the commands' GPU requests")
    add_connection_arguments(install)
    install.set_defaults(func=_install)
    run = verbs.add_parser(
        "run",
        help="run one command's wrapper by hand against an XNAT (no Container Service needed)",
        description=(
            "Resolve WRAPPER of the command in FILE against an XNAT archive with the Container "
            "Service's rules, stage its inputs into --work-dir, run the command line on a backend "
            "(local process by default) with XNAT_HOST/XNAT_USER/XNAT_PASS set to an alias token, "
            "and upload its outputs as the output handlers say. Server and user come from "
            "--url/--user/--password or XNAT_HOST/XNAT_USER/XNAT_PASS."
        ),
    )
    run.add_argument("file", type=Path, metavar="FILE", help="command JSON")
    run.add_argument("--wrapper", help="wrapper name (default: the command's only wrapper)")
    run.add_argument(
        "--input", "-i", action="append", default=[], metavar="NAME=VALUE",
        help="an input value, e.g. -i scan=/archive/experiments/XNAT_E00001/scans/1 (repeat)",
    )  # fmt: skip
    run.add_argument(
        "--raw-input", action="append", default=[], metavar="NAME",
        help="splice this input's value into the command line unquoted, as several shell words "
        "(repeat); values are quoted by default",
    )  # fmt: skip
    add_connection_arguments(run)
    run.add_argument("--backend", default="local", help="local (default), docker or slurm")
    run.add_argument("--work-dir", type=Path, help="staging and logs (default: a temp folder)")
    run.add_argument(
        "--dry-run", action="store_true", help="resolve and print the command line; run nothing"
    )
    run.set_defaults(func=_run)


def _validate(args: argparse.Namespace) -> int:
    from xnat_ml.containers.command import read_command_file

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


def _label(args: argparse.Namespace) -> int:
    import json

    from xnat_ml.bounded_json import load_json
    from xnat_ml.containers.command import load_command

    documents = []
    for path in args.files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise XnatMlError(f"command file {path}: cannot read ({exc.strerror})") from None
        load_command(raw, f"command file {path}")  # refuses what XNAT would refuse
        documents.append(load_json(raw, f"command file {path}"))
    print(json.dumps(documents, separators=(",", ":"), ensure_ascii=False))
    return 0


def _install(args: argparse.Namespace) -> int:
    from xnat_ml.containers.installed import install_shipped, shipped_commands
    from xnat_ml.xnat.cliargs import connect_from_args
    from xnat_ml.xnat.responses import reported_as
    from xnat_ml.xnat.roles import require_site_admin
    from xnat_ml.xnat.uris import segment

    if args.project and not args.enable:
        raise XnatMlError("commands install --project: only with --enable (it enables there)")
    files = shipped_commands(args.names)  # unknown names refused before any call
    with connect_from_args(args) as session:
        require_site_admin(session, "commands install")
        if args.project:
            with reported_as(f"project {args.project}"):
                session.get(f"/data/projects/{segment(args.project)}", accepted_status=[200])
        for line in install_shipped(session, files, args.cpu_only, args.enable, args.project):
            print(line)
    return 0


def _run(args: argparse.Namespace) -> int:
    from xnat_ml.containers.archive import ArchiveClient
    from xnat_ml.containers.backends import get_backend
    from xnat_ml.containers.command import load_command
    from xnat_ml.containers.launch import execute
    from xnat_ml.containers.resolve import resolve

    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        raise XnatMlError(f"command file {args.file}: cannot read ({exc.strerror})") from None
    command = load_command(raw, f"command file {args.file}")
    names = [w.name for w in command.xnat]
    wrapper = command.wrapper(args.wrapper) if args.wrapper else None
    if wrapper is None:
        if args.wrapper or len(names) != 1:
            raise XnatMlError(f"command {command.name}: choose --wrapper among {', '.join(names)}")
        wrapper = command.xnat[0]
    values = {}
    for item in args.input:
        name, sep, value = item.partition("=")
        if not sep:
            raise XnatMlError(f"--input {item!r}: expected NAME=VALUE")
        values[name] = value
    host, user, password = login_from_args(args)
    client = ArchiveClient(host, user, password)
    try:
        resolution = resolve(command, wrapper, values, client, raw_inputs=args.raw_input)
        print(f"command line: {resolution.shown_command_line}")
        for mount in resolution.mounts:
            sources = ", ".join(uri for _kind, uri in mount.sources) or "(empty)"
            print(f"mount {mount.name} at {mount.container_path}: {sources}")
        if args.dry_run:
            return 0
        alias, secret = client.issue_token()
        work = args.work_dir or Path(tempfile.mkdtemp(prefix=f"xnat-ml-{command.name}-"))
        backend = get_backend(args.backend, work / "backend")
        env = {"XNAT_HOST": host, "XNAT_USER": alias, "XNAT_PASS": secret}
        outcome = execute(resolution, client, backend, work, env, f"xnat-ml-{command.name}")
    finally:
        client.close()
    print(f"{outcome.status}: {outcome.message} (logs in {work / 'logs'})")
    for uri in outcome.uploaded or []:
        print(f"uploaded {uri}")
    return 0 if outcome.status == "Complete" else 1
