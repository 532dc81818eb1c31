"""Shared fixtures: a real `xnat-ml serve` subprocess on a free loopback port, and fresh projects.

Tests talk to it over HTTP exactly as users do (xnatpy, pyxnat, requests).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

_ADMIN_PASSWORD = "admin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class XnatServer:
    """A running embedded server: `url`, `user`, `password`, `data_dir`; `restart()` keeps data."""

    data_dir: Path
    port: int = field(default_factory=_free_port)
    user: str = "admin"
    password: str = _ADMIN_PASSWORD
    process: subprocess.Popen | None = None
    serve_args: list[str] = field(default_factory=list)  # more `xnat-ml serve` options
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "server.log"

    def start(self, timeout: float = 60.0) -> None:
        command = [
            sys.executable,
            "-m",
            "xnat_ml",
            "serve",
            "--data",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--admin-password",
            self.password,
            *self.serve_args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "XNAT_ML_ADMIN_PASSWORD"} | self.env
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"xnat-ml serve exited early:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/data/version", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"xnat-ml serve did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

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
    server = XnatServer(data_dir=tmp_path_factory.mktemp("xnat-server") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def start_xnat_server(tmp_path_factory):
    """Start another server with its own options: `start_xnat_server(name, serve_args, env)`."""
    servers = []

    def start(name: str, serve_args: list[str] = (), env: dict | None = None) -> XnatServer:
        server = XnatServer(
            data_dir=tmp_path_factory.mktemp(name) / "data",
            serve_args=list(serve_args),
            env=dict(env or {}),
        )
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
