"""The embedded server as tests drive it: a real `xnat-ml serve` subprocess plus test helpers.

A module of its own (not conftest.py) so that a test needing a server on a folder of its choice
(a small mounted file system, say) can import the class: `from servers import XnatServer`.
"""

from __future__ import annotations

from pathlib import Path

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
