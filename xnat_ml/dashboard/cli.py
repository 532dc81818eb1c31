"""`xnat-ml dashboard`: serve the ML dashboard for any XNAT (docs/dashboard.md)."""

from __future__ import annotations

import argparse
import logging

from xnat_ml.errors import XnatMlError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the ML dashboard for an XNAT",
        description="Serve the ML dashboard (models, datasets, training, runs, jobs, results) "
        "for the XNAT at URL; users log in with their accounts on that XNAT. `xnat-ml serve` "
        "already serves it at /ml/.",
    )
    parser.add_argument("--xnat", required=True, metavar="URL",
                        help="the XNAT's address, e.g. https://xnat.example.org")  # fmt: skip
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8090, help="TCP port (default 8090)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import waitress

    from xnat_ml.dashboard.app import MOUNT, create_app

    url = args.xnat.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise XnatMlError(f"XNAT server {url}: the address must start with http:// or https://")
    try:
        server = waitress.create_server(
            create_app(url),
            host=args.host,
            port=args.port,
            threads=args.threads,
            ident="xnat-ml dashboard",
        )
    except OSError as exc:
        raise XnatMlError(f"{args.host}:{args.port}: cannot listen ({exc.strerror})") from exc
    print(f"ML dashboard for {url} at http://{args.host}:{server.effective_port}{MOUNT}/",
          flush=True)  # fmt: skip
    server.run()
    return 0
