"""`make test` runs pytest-xdist with `--dist loadgroup`, and tests/conftest.py names each test's
group; xdist carries the group in the test's id. Should a pytest or xdist upgrade drop it, every
worker would start the demo's training run, dockerd and Slurm on its own: this fails first."""

from __future__ import annotations

import os

import pytest


def test_the_test_id_carries_its_group(request):
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        pytest.skip("not under pytest-xdist (make test runs it; TEST_WORKERS=0 does not)")
    assert request.node.nodeid.endswith("@tests/test_xdist_groups.py"), request.node.nodeid
