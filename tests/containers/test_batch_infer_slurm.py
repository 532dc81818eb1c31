"""A batch of 5 sessions through `xnat-ml batch run --command infer` on a server whose jobs run
on Slurm (the session's one-node cluster): one session lacks its T1w series and fails alone with
its reason; once fixed, `batch rerun --failed` runs only it; each session ends with exactly one
AI collection. The flow is the local backend's batch of 50 (tests/inference/batch_sites.py)."""

from __future__ import annotations

import pytest
from e2e import backend_setup, start_backend_server
from inference.batch_sites import BatchSite, run_fix_and_rerun

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(request, start_xnat_server, tmp_path_factory) -> BatchSite:
    options, env = backend_setup(request, "slurm")
    server = start_backend_server(start_xnat_server, "xnat-batch-slurm", "slurm", options, env)
    labels = [f"BS_{n}" for n in range(1, 6)]
    return BatchSite(server, "BATCHSLURM", labels, "BS_3", "batchslurm_member",
                     tmp_path_factory.mktemp("batch-slurm"))  # fmt: skip


def test_a_batch_of_5_on_slurm_with_one_failure_fixed_and_rerun(site: BatchSite, capsys):
    run_fix_and_rerun(site, site.cli(capsys))
