"""Shared fixtures: a real `xnat-ml serve` subprocess on a free loopback port, and fresh projects.

Tests talk to it over HTTP exactly as users do (xnatpy, pyxnat, requests).
"""

from __future__ import annotations

import itertools

import pytest
from servers import XnatServer


@pytest.fixture(scope="session")
def xnat_server(tmp_path_factory) -> XnatServer:
    """One `xnat-ml serve` for the whole test session (tmp data dir, free loopback port)."""
    server = XnatServer(tmp_path_factory.mktemp("xnat-server") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def start_xnat_server(tmp_path_factory):
    """Start another server with its own options: `start_xnat_server(name, serve_args, env)`."""
    servers = []

    def start(name: str, serve_args: list[str] = (), env: dict | None = None) -> XnatServer:
        server = XnatServer(tmp_path_factory.mktemp(name) / "data", serve_args, env)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


_project_numbers = itertools.count(1)


@pytest.fixture
def project(xnat_server: XnatServer, request) -> str:
    """A fresh, empty project (admin is its Owner); its ID is returned and it is deleted after."""
    stem = "".join(c for c in request.node.name if c.isalnum())[:40]
    project_id = f"T{next(_project_numbers):03d}_{stem}"
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{project_id}").raise_for_status()
    yield project_id
    if xnat_server.process is not None:
        http.delete(f"{xnat_server.url}/data/projects/{project_id}")
