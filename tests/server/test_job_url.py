"""Where jobs call the server back: SITE_URL, else the address `xnat-ml serve` listens on when
the backend's jobs reach it; a server that cannot be reached refuses to start in one line."""

from __future__ import annotations

import pytest
import requests
from flask import Flask

from xnat_ml.containers.backends.docker import DockerBackend
from xnat_ml.containers.backends.local import LocalBackend
from xnat_ml.containers.backends.slurm import SlurmBackend
from xnat_ml.errors import XnatMlError
from xnat_ml.server import site
from xnat_ml.server.process import free_port


class Remote:
    """A backend whose jobs run elsewhere (a cluster's nodes, a bridged container)."""

    name = "remote"

    def reaches_loopback(self) -> bool:
        return False


def app_with(site_url: str | None = None, bound: list | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SITE_URL"] = site_url
    if bound is not None:
        app.config[site.BOUND] = bound
    return app


@pytest.mark.parametrize(
    ("bound", "backend", "url"),
    [
        ([("127.0.0.1", 8080)], LocalBackend, "http://127.0.0.1:8080"),
        ([("0.0.0.0", 8081)], LocalBackend, "http://127.0.0.1:8081"),
        ([("::", 8082)], LocalBackend, "http://[::1]:8082"),
        ([("::1", 8083), ("127.0.0.1", 8083)], LocalBackend, "http://[::1]:8083"),
        ([("10.1.2.3", 8084)], Remote, "http://10.1.2.3:8084"),
        ([("127.0.0.1", 8085), ("10.1.2.3", 8085)], Remote, "http://10.1.2.3:8085"),
    ],
)
def test_the_bound_address_a_backend_reaches(tmp_path, bound, backend, url):
    made = backend() if backend is Remote else backend(tmp_path)
    assert site.job_url(app_with(bound=bound), lambda: made) == url


@pytest.mark.parametrize(
    "bound", [[("127.0.0.1", 8080)], [("0.0.0.0", 8080)], [("10.0.0.1", 1), ("10.0.0.2", 1)]]
)
def test_an_address_the_jobs_cannot_reach_needs_site_url(bound):
    with pytest.raises(XnatMlError, match="set SITE_URL") as refused:
        site.job_url(app_with(bound=bound), Remote)
    assert "\n" not in str(refused.value)
    given = app_with("https://xnat.example.org/", bound)
    assert site.job_url(given, Remote) == "https://xnat.example.org"


def test_an_app_not_served_has_no_address_for_jobs():
    with pytest.raises(XnatMlError, match="address is unknown"):
        site.job_url(app_with(), Remote)


def test_which_backends_reach_loopback(tmp_path):
    assert LocalBackend(tmp_path).reaches_loopback()
    assert DockerBackend(tmp_path, docker_url="unix:///run/d.sock", docker_network="host") \
        .reaches_loopback()  # fmt: skip
    assert not DockerBackend(tmp_path, docker_url="unix:///run/d.sock").reaches_loopback()
    assert not DockerBackend(tmp_path, docker_url="tcp://10.0.0.9:2375", docker_network="host") \
        .reaches_loopback()  # fmt: skip


@pytest.mark.parametrize(
    ("nodes", "local"),
    [
        ("NodeName=localhost NodeAddr=127.0.0.1 State=IDLE", True),
        ("NodeName=a NodeAddr=127.0.0.1 State=IDLE\nNodeName=b NodeAddr=gpu-7 State=IDLE", False),
        ("", False),
    ],
)
def test_slurm_reaches_loopback_only_when_every_node_is_this_host(tmp_path, monkeypatch,
                                                                  nodes, local):  # fmt: skip
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\nprintf '%s\\n' '{nodes}'\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert SlurmBackend(tmp_path).reaches_loopback() is local


def test_serve_refuses_a_backend_whose_jobs_cannot_reach_it(start_xnat_server):
    with pytest.raises(XnatMlError, match="exited at start") as refused:
        start_xnat_server("bridged-docker", ["--backend", "docker"])
    assert refused.value.args[0].count("\n") == 0
    assert "backend docker: its jobs cannot reach this server at 127.0.0.1:" in str(refused.value)
    assert "set SITE_URL" in str(refused.value)

    port = free_port()
    server = start_xnat_server("bridged-docker-site", ["--backend", "docker"],
                               env={"XNAT_ML_SITE_URL": f"http://10.9.8.7:{port}"})  # fmt: skip
    assert requests.get(f"{server.url}/xapi/siteConfig/buildInfo", timeout=10).ok
