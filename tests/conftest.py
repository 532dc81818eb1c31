"""Shared fixtures: a real `xnat-ml serve` subprocess on a free loopback port, and fresh projects.

Tests talk to it over HTTP exactly as users do (xnatpy, pyxnat, requests).
"""

from __future__ import annotations

import itertools
import time

import pytest
from demo_loop import demo_loop  # noqa: F401 - the session's one training run, as a fixture
from servers import XnatServer

SAMPLE_PROJECT, SAMPLE_SUBJECTS = "SAMPLE12", 12

# Session fixtures that cost minutes or own a machine-wide resource: made once a test session.
SHARED_ONCE = ("demo_loop", "dockerd", "slurm")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items) -> None:
    """`make test` runs the demo loop's tests first, alone (marked `demo_loop`: its training
    run wants both cores), then the rest on two pytest-xdist workers (`--dist loadgroup`), each
    with its own session fixtures. So a module's tests run on one worker (its module fixtures
    are made once), and modules that use one of SHARED_ONCE run together on one worker (dockerd
    and Slurm are each started once), those groups first: the longest work starts at once."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for item in items:
        module = item.nodeid.split("::")[0]
        for name in SHARED_ONCE:  # a backend test asks for its daemon by name: marked instead
            marker = name.removesuffix("d")
            if name in getattr(item, "fixturenames", ()) or item.get_closest_marker(marker):
                parent[root(module)] = root(name)
    shared = {root(name): name for name in reversed(SHARED_ONCE) if name in parent}
    for item in items:
        group = root(item.nodeid.split("::")[0])
        item.add_marker(pytest.mark.xdist_group(shared.get(group, group)))
        if shared.get(group) == "demo_loop":
            item.add_marker(pytest.mark.demo_loop)
    rank = {name: i for i, name in enumerate(SHARED_ONCE)}
    items.sort(key=lambda item: rank.get(shared.get(root(item.nodeid.split("::")[0])), len(rank)))


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


@pytest.fixture(scope="session")
def sample_project(xnat_server: XnatServer) -> str:
    """The sample project (`xnat-ml sample-data --subjects 12`) on the session's server, with the
    roi-to-mask subscription installed first, returned once every roi-to-mask job is Complete:
    per subject a T1w and a T2w scan, an RTSTRUCT ROI collection, the T1w's image NIfTI and
    the collection's LABELMAP. Built once per test session; tests only read it."""
    from xnat_ml.containers.jobs import FINAL_STATUSES
    from xnat_ml.events.install import default_handlers, install_handler
    from xnat_ml.sample import build_sample_project
    from xnat_ml.sample.project import ensure_project
    from xnat_ml.xnat import connect

    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        ensure_project(session, SAMPLE_PROJECT)
        for handler in default_handlers():
            install_handler(session, SAMPLE_PROJECT, handler)
        built = build_sample_project(session, SAMPLE_PROJECT, SAMPLE_SUBJECTS)
        expected = sum(b.created for b in built)
        deadline = time.monotonic() + 900
        while True:
            jobs = session.get_json("/xapi/containers", query={"project": SAMPLE_PROJECT})
            finished = [j for j in jobs if j["status"] in FINAL_STATUSES]
            if len(jobs) >= expected and len(finished) == len(jobs):
                break
            assert time.monotonic() < deadline, f"roi-to-mask jobs still running: {jobs}"
            time.sleep(0.5)
    assert all(j["status"] == "Complete" for j in jobs), [(j["id"], j["status"]) for j in jobs]
    return SAMPLE_PROJECT
