"""``xnat-ml monailabel``: MONAI Label's REST API for one project, served alone with waitress."""

from __future__ import annotations

import argparse
import logging

from xnat_ml.xnat.cliargs import add_connection_arguments

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "monailabel",
        help="serve MONAI Label's REST API for a project (3D Slicer, OHIF)",
        description=(
            "Serve MONAI Label's REST API (info, datastore, infer, train, activelearning) for "
            "one XNAT project, talking to XNAT only through its REST API. Clients log in with "
            "their XNAT user (auth/token hands out an XNAT alias token); callers without "
            "credentials act as --user, when given. See docs/monailabel.md."
        ),
    )
    parser.add_argument("--project", required=True, help="the XNAT project to serve")
    parser.add_argument("--models", metavar="NAME[:N],...",
                        help="serve only these model versions (default: all)")  # fmt: skip
    parser.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                        help="address to listen on (default 127.0.0.1)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--device", default="cpu", help="torch device for inference (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    add_connection_arguments(parser)
    parser.add_argument("--xnat", dest="url", metavar="URL", help="same as --url")
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import waitress

    from xnat_ml.errors import XnatMlError
    from xnat_ml.xnat.connection import server_login

    url, user, password = server_login(args.url, args.user, args.password)
    allowed = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    app = make_app(args.project, url, (user, password) if user else None, allowed, args.device)
    if user:  # fail now, in one line, rather than at every request
        from xnat_ml.monailabel.caller import caller

        if caller(url, args.project, (user, password or "")).role is None:
            raise XnatMlError(f"project {args.project}: user {user} is not a member of it")
    try:
        server = waitress.create_server(app, host=args.listen, port=args.port,
                                        threads=args.threads)  # fmt: skip
    except OSError as exc:
        raise XnatMlError(f"{args.listen}:{args.port}: cannot listen ({exc.strerror})") from exc
    log.info("MONAI Label API for project %s (XNAT %s) at http://%s:%s/", args.project, url,
             args.listen, server.effective_port)  # fmt: skip
    server.run()
    return 0


def make_app(project: str, xnat_url: str, login: tuple[str, str] | None,
             models: list[str] | None = None, device: str = "cpu"):  # fmt: skip
    """A Flask app serving the blueprint at ``/`` for ``project``."""
    from flask import Flask, jsonify

    from xnat_ml.monailabel import blueprint

    app = Flask("xnat_ml.monailabel")
    app.url_map.strict_slashes = False
    app.config.update({blueprint.XNAT_URL: xnat_url, blueprint.LOGIN: login,
                       blueprint.MODELS: models or None, blueprint.DEVICE: device})  # fmt: skip
    blueprint.register_standalone(app, project)
    app.register_error_handler(404, lambda _exc: (jsonify({"detail": "Not Found"}), 404))
    return app
