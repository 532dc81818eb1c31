"""`xnat-ml batch ...` and `xnat-ml jobs ...`: run a command over many sessions, follow the jobs."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from xnat_ml.cli import add_verb_group
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# The batch machinery (xnatpy, requests) is imported inside the handlers: `xnat-ml` registers
# every verb module before dispatching, and the other verbs should not pay for it.


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_batch(subparsers)
    _register_jobs(subparsers)


def _register_batch(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers,
        "batch",
        help="run a Container Service command over many sessions",
        description="Launch a command on many objects of a project at once, and rerun failures.",
    )
    run = verbs.add_parser(
        "run",
        help="launch a command on a selection of sessions (or their scans / ROI collections)",
        description=(
            "Select objects of project P from one bulk listing, then launch the command's wrapper "
            "on all of them with one bulk launch. The wrapper's first external input decides the "
            "level: sessions, subjects, scans (narrowed by --scan-types) or assessors. Criteria "
            "combine with AND; patterns use * and ? (fnmatch, case-sensitive). Prints the batch "
            "id; the record is kept in the project resource ML_BATCHES."
        ),
    )
    run.add_argument("--project", required=True, metavar="P", help="project ID")
    run.add_argument("--command", required=True, metavar="NAME", help="installed command name")
    run.add_argument(
        "--wrapper",
        metavar="W",
        help="wrapper name (default: the only one, the one named like the command, or the "
        "only one on a session)",
    )
    run.add_argument(
        "--sessions",
        nargs="+",
        default=(),
        metavar="PAT",
        help="session label patterns, e.g. 'PAT0*'",
    )
    run.add_argument(
        "--subjects", nargs="+", default=(), metavar="PAT", help="subject label patterns"
    )
    run.add_argument(
        "--ids",
        nargs="+",
        default=(),
        metavar="ID",
        help="session accession ids or labels, exactly",
    )
    run.add_argument(
        "--scan-types",
        nargs="+",
        default=(),
        metavar="T",
        help="scan type patterns (scan-level commands)",
    )
    run.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for another wrapper input (repeatable)",
    )
    add_connection_arguments(run)
    run.set_defaults(func=_run)

    rerun = verbs.add_parser(
        "rerun",
        help="relaunch the failed jobs of a batch",
        description=(
            "Relaunch, in one bulk launch, the objects of batch BATCH whose latest job has a "
            "Failed status (Failed, Failed (Upload), ...) or whose launch was refused. The "
            "batch record gets a new attempt; `xnat-ml jobs --batch BATCH` shows all of them."
        ),
    )
    rerun.add_argument("batch", metavar="BATCH", help="batch id printed by `batch run`")
    rerun.add_argument(
        "--failed",
        action="store_true",
        required=True,
        help="rerun the failed subgroup (required: the only mode)",
    )
    rerun.add_argument("--project", required=True, metavar="P", help="project ID of the batch")
    add_connection_arguments(rerun)
    rerun.set_defaults(func=_rerun)

    status = verbs.add_parser(
        "status",
        help="how far a batch is: each object's latest job, and why failed ones failed",
        description=(
            "Print one line per object of batch BATCH (its latest attempt): the job, its status "
            "and, for a failed job, the last line of its stderr (the job's one-line error); then "
            "a count per status. With --wait, poll until every job has ended. Exits 0 when every "
            "object's job is Complete, 1 otherwise."
        ),
    )
    status.add_argument("batch", metavar="BATCH", help="batch id printed by `batch run`")
    status.add_argument("--project", required=True, metavar="P", help="project ID of the batch")
    status.add_argument("--wait", action="store_true", help="wait until every job has ended")
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between polls (2)"
    )
    add_connection_arguments(status)
    status.set_defaults(func=_status)


def _register_jobs(subparsers: argparse._SubParsersAction) -> None:
    jobs = subparsers.add_parser(
        "jobs",
        help="list Container Service jobs; show their logs; kill them",
        description=(
            "List the server's containers (jobs), newest last, optionally narrowed by status "
            "prefix (e.g. Failed), project and batch. Subcommands: logs, kill."
        ),
    )
    jobs.add_argument(
        "--status",
        metavar="S",
        help="status prefix, case-insensitive (Created, Running, Complete, Failed, Killed)",
    )
    jobs.add_argument("--project", metavar="P", help="project ID")
    jobs.add_argument("--batch", metavar="B", help="batch id (needs --project)")
    add_connection_arguments(jobs)
    jobs.set_defaults(func=_jobs)
    verbs = jobs.add_subparsers(dest="jobs_verb", metavar="VERB")

    logs = verbs.add_parser(
        "logs",
        help="print a job's stdout (or stderr), or follow it until the job ends",
        description=(
            "Print the stdout log of job ID (--stderr: its stderr). With --follow, keep printing "
            "what the job adds until it ends; the exit code is then 0 if it ended Complete, 1 "
            "otherwise, so a script can wait on a job."
        ),
    )
    logs.add_argument("id", metavar="ID", help="container id from `xnat-ml jobs`")
    logs.add_argument("--stderr", action="store_true", help="print stderr instead of stdout")
    logs.add_argument("--follow", "-f", action="store_true", help="follow until the job ends")
    logs.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between polls (2)"
    )
    add_connection_arguments(logs)
    logs.set_defaults(func=_logs)

    kill = verbs.add_parser(
        "kill", help="stop a running job", description="Kill job ID; its status becomes Killed."
    )
    kill.add_argument("id", metavar="ID", help="container id from `xnat-ml jobs`")
    add_connection_arguments(kill)
    kill.set_defaults(func=_kill)


def _inputs(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise XnatMlError(f"--input {pair!r}: expected NAME=VALUE")
        values[name] = value
    return values


def _print_attempt(record, attempt) -> int:
    failed = [i for i in attempt["items"] if i.get("error")]
    for item in attempt["items"]:
        outcome = f"refused: {item['error']}" if item.get("error") else f"job {item['container']}"
        print(f"  {item['label']}: {outcome}")
    print(
        f"batch {record.id}: {len(attempt['items']) - len(failed)} launched, "
        f"{len(failed)} refused ({record.command}/{record.wrapper} in {record.project})"
    )
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    from xnat_ml.containers.batch import Selection, run_batch

    selection = Selection(args.sessions, args.subjects, args.ids, args.scan_types)
    with connect_from_args(args) as session:
        record, attempt = run_batch(
            session, args.project, args.command, args.wrapper, selection, _inputs(args.inputs)
        )
    return _print_attempt(record, attempt)


def _rerun(args: argparse.Namespace) -> int:
    from xnat_ml.containers.batch import rerun_failed

    with connect_from_args(args) as session:
        record, attempt = rerun_failed(session, args.project, args.batch)
    return _print_attempt(record, attempt)


def _status(args: argparse.Namespace) -> int:
    from collections import Counter

    from xnat_ml.containers.batch import REFUSED, batch_states
    from xnat_ml.containers.jobs import COMPLETE, FAILED, FINAL_STATUSES

    def ended(status: str) -> bool:  # a real XNAT has more failures ("Failed (Rejected)")
        return status in (*FINAL_STATUSES, REFUSED) or status.startswith(FAILED)

    with connect_from_args(args) as session:
        while True:
            states = batch_states(session, args.project, args.batch)
            if not args.wait or all(ended(s.status) for s in states):
                break
            time.sleep(args.interval)
    for s in states:
        job = f"job {s.container}" if s.container else "no job"
        print(f"  {s.label}: {job} {s.status}" + (f": {s.reason}" if s.reason else ""))
    counts = Counter(s.status for s in states)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"batch {args.batch}: {summary}")
    return 0 if counts.get(COMPLETE, 0) == len(states) else 1


def _jobs(args: argparse.Namespace) -> int:
    from xnat_ml.containers.batch import filter_jobs, list_containers, load_record

    if args.batch and not args.project:
        raise XnatMlError(f"batch {args.batch}: give its --project too")
    with connect_from_args(args) as session:
        keys = load_record(session, args.project, args.batch).job_keys() if args.batch else None
        chosen = filter_jobs(list_containers(session), args.status, args.project, keys)
    print("ID\tSTATUS\tPROJECT\tCOMMAND\tOBJECT\tSTATUS TIME")
    for c in chosen:
        name = f"{c.get('command-name', c.get('command-id', ''))}/{c.get('wrapper-name', '')}"
        print(
            f"{c.get('id')}\t{c.get('status')}\t{c.get('project', '')}\t{name}\t"
            f"{c.get('root-uri', '')}\t{_when(c.get('status-time'))}"
        )
    return 0


def _when(value) -> str:
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "")


def _logs(args: argparse.Namespace) -> int:
    from xnat_ml.containers.jobs import COMPLETE, FAILED, FINAL_STATUSES
    from xnat_ml.xnat.responses import reported_as

    which = "stderr" if args.stderr else "stdout"
    printed = 0
    with connect_from_args(args) as session:
        while True:
            # The status first: a job seen ended has its whole log written already.
            if args.follow:
                with reported_as(f"job {args.id}: reading its status"):
                    status = session.get_json(f"/xapi/containers/{args.id}")["status"]
            with reported_as(f"job {args.id}: reading its {which}"):
                text = session.get(f"/xapi/containers/{args.id}/logs/{which}").text
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = max(printed, len(text))
            if not args.follow:
                return 0
            # A real XNAT has more failures than ours ("Failed (Setup)", "Failed (Rejected)").
            if status in FINAL_STATUSES or status.startswith(FAILED):
                print(f"job {args.id}: {status}", file=sys.stderr)
                return 0 if status == COMPLETE else 1
            time.sleep(args.interval)


def _kill(args: argparse.Namespace) -> int:
    from xnat_ml.xnat.responses import reported_as

    with connect_from_args(args) as session:
        with reported_as(f"job {args.id}: killing it"):
            session.post(f"/xapi/containers/{args.id}/kill", accepted_status=[200, 204])
    print(f"job {args.id}: kill requested")
    return 0
