"""A batch of 50 sessions through `xnat-ml batch run --command infer` on the local backend, as a
Member: one session lacks its T1w series, so its job fails alone and `batch status` says why;
once the series is imported, `batch rerun --failed` runs only that session; every session ends
with exactly one AI collection (tests/inference/batch_sites.py).

Sessions are tiny synthetic DICOM imports (one zip each); the model is the CPU tissues template
with random weights (inference_models): the batch mechanics are under test, not accuracy.
"""

from __future__ import annotations

import pytest
from inference.batch_sites import BatchSite, run_fix_and_rerun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # 50 jobs, each a new Python


@pytest.fixture(scope="module")
def site(xnat_server, tmp_path_factory) -> BatchSite:
    labels = [f"B50_{n:02d}" for n in range(1, 51)]
    return BatchSite(xnat_server, "BATCH50", labels, "B50_17", "batch50_member",
                     tmp_path_factory.mktemp("batch50"))  # fmt: skip


def test_a_batch_of_50_with_one_failure_fixed_and_rerun(site: BatchSite, capsys):
    run_fix_and_rerun(site, site.cli(capsys))
