"""Session fixtures for the container tests: a real dockerd and a real one-node Slurm.

Without the Debian packages (or root) the tests that need them skip with the reason in the
summary; under CI (`CI` set) they fail instead, because .ci/run installs the packages and a skip
there would hide a broken set-up.
"""

from __future__ import annotations

import os

import e2e
import pytest
from daemons import DockerDaemon, SlurmCluster, Unavailable, start_dockerd, start_slurm


def pytest_collection_modifyitems(items) -> None:
    """Mark tests by the daemons they use, so `-m "not docker and not slurm"` leaves them out."""
    for item in items:
        for fixture in ("dockerd", "slurm"):
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(fixture.removesuffix("d"))


def _missing(what: str, exc: Exception) -> None:
    message = f"NO {what}: {exc}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd (unix socket in a temp dir) with the test image imported."""
    try:
        daemon: DockerDaemon = start_dockerd()
    except Unavailable as exc:
        _missing("DOCKER", exc)
    print(f"\ndockerd ready in {daemon.startup_s:.2f} s, test image in {daemon.image_s:.2f} s")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def slurm():
    """A one-node Slurm (munged, slurmctld, slurmd) with its own slurm.conf and ports."""
    try:
        cluster: SlurmCluster = start_slurm()
    except Unavailable as exc:
        _missing("SLURM", exc)
    print(f"\nslurm node idle {cluster.startup_s:.2f} s after start")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def image(dockerd):
    """container_images/xnat-ml, built once a session (minutes) for every test that runs it."""
    return e2e.build_image(dockerd)
