"""`xnat-ml serve` as a child process on a loopback port: the demo, the tests and the benchmarks
all need a real server they can start, wait for, restart on the same data and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from xnat_ml.errors import XnatMlError

# What the readiness probe asks: XNAT >= 1.7 answers it (and no longer /data/version).
BUILD_INFO = "/xapi/siteConfig/buildInfo"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`xnat-ml serve --data DATA_DIR` on 127.0.0.1; usable as a context manager.

    The log goes to `log_path` (default DATA_DIR/server.log) and is appended to across restarts;
    if the server dies or does not answer in time, the error quotes its last line.
    XNAT_ML_ADMIN_PASSWORD is kept out of the child's environment: `admin_password` decides.
    `user` and `password` are the site administrator's login on a fresh DATA_DIR.
    """

    user = "admin"

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        admin_password: str = "admin",
        serve_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.password = admin_password
        self.serve_args = list(serve_args)  # more `xnat-ml serve` options
        self.env = dict(env or {})  # added to the server's environment
        self.log_path = log_path or self.data_dir / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it answers /xapi/siteConfig/buildInfo."""
        import requests

        command = [
            sys.executable, "-m", "xnat_ml", "serve", "--data", str(self.data_dir),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-password", self.password, *self.serve_args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "XNAT_ML_ADMIN_PASSWORD"} | self.env
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise XnatMlError(f"xnat-ml serve: exited at start ({self._last_line()})")
            try:
                if requests.get(f"{self.url}{BUILD_INFO}", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise XnatMlError(
            f"xnat-ml serve: no answer on {self.url} after {timeout:.0f} s ({self._last_line()})"
        )

    def stop(self) -> None:
        """Terminate the server (kill it after 15 s); nothing to do if it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _last_line(self) -> str:
        return f"{self.log_tail(1) or 'no output'}; log in {self.log_path}"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
