"""`xnat-ml events ...`: install the shipped Event Service subscriptions into a project."""

from __future__ import annotations

import argparse
from pathlib import Path

from xnat_ml.cli import add_verb_group
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# The installer and its HTTP stack (xnatpy) are imported inside the handlers: `xnat-ml`
# registers every verb module before dispatching, and the other verbs should not pay for them.


def register(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers,
        "events",
        help="install and inspect Event Service subscriptions",
        description="Work with XNAT Event Service subscriptions (event_handlers/).",
    )

    install = verbs.add_parser(
        "install",
        help="install the event_handlers/ subscriptions into a project",
        description=(
            "Install subscriptions into project P of a real XNAT or the embedded server: for each "
            "file, look the command's wrapper up by name (installing command_json/<command>.json "
            "when missing, which needs an admin), enable the wrapper for P and create the project "
            "subscription '<P>: <name>'. Idempotent: running it again changes nothing. Needs the "
            "Owner role in P. Opt-in handlers (infer: a model on each new scan's DICOM) are "
            "installed only when named: --only infer --set MODEL=NAME[:N]."
        ),
    )
    install.add_argument("--project", required=True, metavar="P", help="project ID")
    install.add_argument(
        "--file",
        dest="files",
        action="append",
        type=Path,
        metavar="FILE",
        help="a subscription file to install (repeatable; default: every file in the "
        "repository's event_handlers/)",
    )
    install.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="install only this handler (repeatable): its file name without "
        "'.subscription.json'; the way to install an opt-in one such as 'infer'",
    )
    install.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        type=_setting,
        metavar="KEY=VALUE",
        help="a setting the handler needs (repeatable), e.g. MODEL=NAME[:N] for 'infer' "
        "(NAME alone: its latest version, pinned now)",
    )
    add_connection_arguments(install)
    install.set_defaults(func=_install)

    listing = verbs.add_parser(
        "list",
        help="list a project's subscriptions",
        description="List the Event Service subscriptions that apply to project P.",
    )
    listing.add_argument("--project", required=True, metavar="P", help="project ID")
    add_connection_arguments(listing)
    listing.set_defaults(func=_list)
    history = verbs.add_parser(
        "history",
        help="show what a project's subscriptions launched (or why they could not)",
        description=(
            "List the Event Service deliveries of project P, newest first: time, subscription, "
            "object, then the job launched or the reason the launch was refused."
        ),
    )
    history.add_argument("--project", required=True, metavar="P", help="project ID")
    history.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (50)")
    add_connection_arguments(history)
    history.set_defaults(func=_history)


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _install(args: argparse.Namespace) -> int:
    from xnat_ml.events.install import (
        handler_files,
        install_handler,
        read_handler,
        select_handlers,
        settle,
    )
    from xnat_ml.xnat.roles import require_role

    handlers = [read_handler(path) for path in (args.files or handler_files())]
    values = dict(args.settings)
    # named files are installed whatever their opt-in mark, as named handlers are
    only = args.only or ([h.name for h in handlers] if args.files else None)
    handlers = select_handlers(handlers, only, values)
    with connect_from_args(args) as session:
        require_role(session, args.project, "Owner", "events install")
        handlers = [settle(session, args.project, h, values) for h in handlers]
        for handler in handlers:
            outcome = install_handler(session, args.project, handler)
            print(f"{handler.path.name}: {outcome} in project {args.project}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from xnat_ml.xnat.responses import reported_as
    from xnat_ml.xnat.uris import segment

    with connect_from_args(args) as session:
        with reported_as(f"project {args.project}: listing its event subscriptions"):
            subs = session.get_json(f"/xapi/projects/{segment(args.project)}/events/subscriptions")
    for sub in subs or []:
        state = "active" if sub.get("active") else "inactive"
        event = str(sub.get("event-filter", {}).get("event-type", "")).rsplit(".", 1)[-1]
        print(f"{sub.get('id')}\t{state}\t{event}\t{sub.get('action-key')}\t{sub.get('name')}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from xnat_ml.xnat.responses import reported_as
    from xnat_ml.xnat.uris import segment

    with connect_from_args(args) as session:
        with reported_as(f"project {args.project}: reading its event history"):
            deliveries = session.get_json(
                f"/xapi/projects/{segment(args.project)}/events/delivered",
                query={"limit": str(max(1, args.limit))},
            )
    for d in deliveries or []:
        trigger = d.get("trigger") or {}
        outcome = (
            f"refused: {d.get('status-message')}"
            if d.get("error")
            else f"job {d.get('container-id')}"
        )
        print(
            f"{d.get('timestamp')}\t{(d.get('subscription') or {}).get('name')}\t"
            f"{trigger.get('label')}\t{outcome}"
        )
    return 0
