"""Shared fixtures: a real `xnat-ml serve` subprocess on a free loopback port, and fresh projects.

Tests talk to it over HTTP exactly as users do (xnatpy, pyxnat, requests).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import requests

from xnat_ml.server.process import ServerProcess


class XnatServer(ServerProcess):
    """A running embedded server: `url`, `user`, `password`, `data_dir`; `restart()` keeps data."""

    def __init__(self, data_dir: Path, serve_args: list[str] = (), env: dict | None = None):
        # The log sits beside the data folder: tests search that folder for stray files.
        super().__init__(data_dir, serve_args=serve_args, env=env,
                         log_path=data_dir.parent / "server.log")  # fmt: skip

    def session(self, user: str | None = None, password: str | None = None) -> requests.Session:
        """A requests session with basic auth (admin by default)."""
        http = requests.Session()
        http.auth = (user or self.user, password or self.password)
        return http

    def add_user(
        self, username: str, password: str, project: str | None = None, role: str | None = None
    ) -> None:
        """Create a user (idempotent) and optionally give them a role (Owner, Member,
        Collaborator) in a project."""
        admin = self.session()
        response = admin.post(
            f"{self.url}/xapi/users",
            json={
                "username": username,
                "password": password,
                "email": f"{username}@example.org",
                "firstName": username,
                "lastName": "Test",
                "enabled": True,
                "verified": True,
            },
        )
        if response.status_code not in (201, 409):
            response.raise_for_status()
        if project and role:
            admin.put(
                f"{self.url}/data/projects/{project}/users/{role}s/{username}"
            ).raise_for_status()


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
