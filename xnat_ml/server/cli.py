"""`xnat-ml serve`: run the embedded XNAT-compatible server with waitress."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from xnat_ml.errors import XnatMlError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the embedded XNAT-compatible server",
        description=(
            "Serve an XNAT-compatible REST API (projects, subjects, sessions, scans, "
            "resources, ROI collections) from DIR: metadata in DIR/xnat-ml.sqlite, files under "
            "DIR/archive. A fresh DIR gets the site administrator 'admin'. Every setting "
            "not given here comes from its environment variable XNAT_ML_<NAME>, else its "
            "default (docs/server.md lists them)."
        ),
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="archive folder (created if missing)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument(
        "--admin-password",
        default=None,
        help="password of 'admin' on a fresh DIR (default: env "
        "XNAT_ML_ADMIN_PASSWORD, else 'admin')",
    )
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument(
        "--token-lifetime",
        type=int,
        metavar="SECONDS",
        help="how long alias tokens stay valid (default 172800 = 2 days, as in XNAT)",
    )
    parser.add_argument(
        "--extract-max-gb",
        type=float,
        metavar="GB",
        help="refuse (413) an uploaded archive that would expand to more (default 256 GiB; "
        "never more than the free disk)",
    )
    parser.add_argument(
        "--extract-max-files",
        type=int,
        metavar="N",
        help="refuse (413) an uploaded archive holding more files (default 1,000,000)",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "docker", "slurm"),
        help="where launched commands run (default local: a process on this machine; "
        "see docs/backends.md)",
    )
    parser.add_argument(
        "--backend-option",
        action="append",
        type=_backend_option,
        metavar="KEY=VALUE",
        help="a backend setting, repeatable, e.g. docker_url=unix:///run/docker.sock, "
        "docker_network=host, slurm_partition=gpu; JSON values are parsed "
        '(docker_binds=\'["/opt/venv:/opt/venv:ro"]\')',
    )
    parser.add_argument(
        "--raw-input",
        action="append",
        metavar="COMMAND:INPUT",
        help="splice this command input's value into the command line unquoted, as several "
        "shell words (repeatable; e.g. debug:command). Values are quoted by default, so that a "
        "launching user cannot run shell code on the host; see docs/container-service.md",
    )
    parser.set_defaults(func=serve)


def _backend_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """create_app's keyword arguments for the options given (None: not given, so that the
    environment or the default decides; see config.py)."""
    gb = args.extract_max_gb
    options = args.backend_option
    return {
        "admin_password": args.admin_password,
        "token_lifetime_s": args.token_lifetime,
        "extract_max_bytes": None if gb is None else int(gb * 2**30),
        "extract_max_files": args.extract_max_files,
        "container_backend": args.backend,
        "container_backend_options": None if options is None else dict(options),
        "container_raw_inputs": args.raw_input,
    }


_ELSEWHERE = {
    "docker": "in containers on the Docker host",
    "slurm": "as batch jobs on the Slurm cluster",
}


def _backend_line(app) -> str:
    """Where launched jobs run, said at start; the local backend is made now, so that a bad
    `local_user` stops the start rather than the first job."""
    from xnat_ml.server.container_service import container_service

    service = container_service.get(app)
    if service.backend_name == "local":
        return service.backend().describe()
    return f"{service.backend_name} backend: jobs run {_ELSEWHERE[service.backend_name]}"


def serve(args: argparse.Namespace) -> int:
    import waitress

    from xnat_ml.server import site
    from xnat_ml.server.app import create_app
    from xnat_ml.server.container_service import container_service
    from xnat_ml.server.store.signals import announce_ready

    try:
        args.data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XnatMlError(f"{args.data}: cannot create the data folder ({exc.strerror})") from exc
    app = create_app(args.data, **_settings(args))
    backend_line = _backend_line(app)
    try:
        server = waitress.create_server(
            app,
            host=args.host,
            port=args.port,
            threads=args.threads,
            ident="xnat-ml",
            max_request_body_size=64 * 1024**3,
            # Uploads are DICOM and NIfTI of many MB: reading the socket 256 KiB at a time instead
            # of waitress' 8 KiB makes a large PUT markedly faster (benchmarks/bench_transfer.py).
            recv_bytes=256 * 1024,
        )
    except OSError as exc:
        raise XnatMlError(f"{args.host}:{args.port}: cannot listen ({exc.strerror})") from exc
    listening = getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)
    ]
    try:  # where jobs call back: SITE_URL, else an address bound that their backend reaches
        site.bind(app, listening, container_service.get(app).backend)
    except XnatMlError:
        server.close()
        raise
    log.info("Serving XNAT API from %s on %s", args.data,
             ", ".join(f"http://{host}:{port}" for host, port in listening))
    log.info("%s", backend_line)
    # The socket listens: events and jobs left from before a restart may call the API now
    # (their requests wait in the backlog until the loop below serves them).
    announce_ready(app)
    server.run()
    return 0
