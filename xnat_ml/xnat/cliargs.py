"""The server options of every verb that talks to XNAT, and the session they open.

Verb modules import this to build `xnat-ml`'s parser, so it imports nothing heavy: xnatpy is
loaded when a handler connects.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xnat_ml.errors import XnatMlError

if TYPE_CHECKING:
    from xnat.session import XNATSession


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--url (alias --host), --user, --password; each falls back to XNAT_HOST/USER/PASS."""
    group = parser.add_argument_group("XNAT server (default: $XNAT_HOST, $XNAT_USER, $XNAT_PASS)")
    group.add_argument(
        "--url", "--host", dest="url", metavar="URL",
        help="XNAT address, e.g. http://127.0.0.1:8080",
    )  # fmt: skip
    group.add_argument("--user", metavar="NAME", help="user name (or alias token)")
    group.add_argument("--password", metavar="SECRET", help="password (or token secret)")


def connect_from_args(args: argparse.Namespace) -> XNATSession:
    """An xnatpy session from the options `add_connection_arguments` added."""
    from xnat_ml.xnat.connection import connect

    return connect(args.url, args.user, args.password)


def login_from_args(args: argparse.Namespace) -> tuple[str, str, str]:
    """Address, user and password for a client that is not xnatpy: all three are needed."""
    from xnat_ml.xnat.connection import server_login

    host, user, password = server_login(args.url, args.user, args.password)
    if not user:
        raise XnatMlError(f"XNAT server {host}: no user given; pass --user or set XNAT_USER")
    return host, user, password
