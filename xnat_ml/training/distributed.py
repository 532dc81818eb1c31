"""Data-parallel training (DDP): one process per GPU, or several CPU processes, under torchrun.

A run whose config asks for several processes (``resources.processes``, one per GPU by default)
is started by ``execute_run`` as ``torch.distributed.run`` on the runner module, while the
calling process stays outside the workers and mirrors the run folder each time rank 0 writes a
checkpoint, as it does for one process. Each worker opens the bundle with ``overlay`` below, set
through the bundle's standard ids, as MONAI's own ``multi_gpu_train.json`` files do; so any
bundle that has the ids trains on several GPUs, with or without such a file. A bundle's own
``multi_gpu_train.json`` is not applied: it hard-codes NCCL, its own seed and the positions of
its handlers, which the run's config may change.

Rank 0 alone writes the run folder; the bundle's own handlers still run on every rank (the
validation handler and the LR scheduler must), with their output folders sent to a scratch
folder on ranks above 0. Every rank starts from the same seed and restores rank 0's generators
on resume, so a resumed run repeats what the dead one would have done, as with one process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import TRAIN_CONFIG, has_id
from xnat_ml.training.run_folder import RunFolder, RunSync, sync_run

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often the launching process looks for a new checkpoint to mirror
_NEEDED_IDS = ("network", "train#dataloader", "validate#dataloader")
# The pid each process must not outlive: torchrun's launcher's, then each worker's torchrun's.
LAUNCHER_PID, AGENT_PID = "XNAT_ML_LAUNCHER_PID", "XNAT_ML_AGENT_PID"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Placement:
    """Where this worker sits: its rank among ``world`` processes, its GPU when ``cuda``."""

    rank: int
    local_rank: int
    world: int
    cuda: bool

    @property
    def primary(self) -> bool:
        return self.rank == 0


SINGLE = Placement(rank=0, local_rank=0, world=1, cuda=False)


def worker_placement(gpus: int) -> Placement | None:
    """This process's placement when torchrun started it; None otherwise."""
    if "LOCAL_RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return Placement(rank=int(os.environ["RANK"]), local_rank=int(os.environ["LOCAL_RANK"]),
                     world=int(os.environ["WORLD_SIZE"]), cuda=gpus > 0)  # fmt: skip


def die_with_parent(variable: str) -> None:
    """Be killed when the parent process dies (Linux); exit now if the parent named in the
    environment ``variable`` is already gone. A no-op when the variable is not set."""
    expected = os.environ.get(variable)
    if expected is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(expected):
        print(f"error: process {expected} that started this one is gone", file=sys.stderr)
        os._exit(1)


def check_gpus(run: str, processes: int, gpus: int) -> None:
    """Several processes on GPUs need as many visible GPUs: refuse before any work."""
    if processes < 2 or not gpus:
        return
    import torch

    seen = torch.cuda.device_count()
    if seen < gpus:
        raise XnatMlError(
            f"run {run}: asks for {gpus} GPUs and this machine sees {seen} (a Container Service "
            f'command needs "gpus": "{gpus}" and "generic-resources": {{"gpu": "{gpus}"}}; '
            "docs/backends.md, GPUs)"
        )


def overlay(bundle_config: Any, bundle: Path, place: Placement, n_validation: int,
            scratch: Path | None) -> dict[str, Any]:  # fmt: skip
    """The bundle overrides that make this worker one replica of ``place.world``."""
    for config_id in _NEEDED_IDS:
        if not has_id(bundle_config, config_id):
            raise XnatMlError(
                f"bundle {bundle}: {TRAIN_CONFIG} lacks the id '{config_id}' that training on "
                f"{place.world} processes binds"
            )
    network: dict[str, Any] = {"_target_": "torch.nn.parallel.DistributedDataParallel",
                               "module": "$@network_def.to(@device)"}  # fmt: skip
    if place.cuda:
        network["device_ids"] = ["@device"]
    out: dict[str, Any] = {
        "device": f"$torch.device('cuda:{place.local_rank}')" if place.cuda
        else "$torch.device('cpu')",
        "network": network,
        "train#sampler": {"_target_": "monai.data.DistributedSampler",
                          "dataset": "@train#dataset", "even_divisible": True, "shuffle": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        # Every rank must validate at least one case; padding repeats a case only when needed.
        "validate#sampler": {"_target_": "monai.data.DistributedSampler",
                             "dataset": "@validate#dataset",
                             "even_divisible": n_validation < place.world, "shuffle": False},
        "validate#dataloader#sampler": "@validate#sampler",
    }  # fmt: skip
    if scratch is not None:
        out.update(ckpt_dir=str(scratch / "models"), output_dir=str(scratch / "eval"))
    return out


@contextmanager
def process_group(place: Placement) -> Iterator[None]:
    """Join the workers' group (NCCL on GPUs, gloo on CPUs) for the length of the run."""
    if place.world < 2:
        yield
        return
    import torch
    import torch.distributed as dist

    die_with_parent(AGENT_PID)
    if place.cuda:
        torch.cuda.set_device(place.local_rank)
    dist.init_process_group(backend="nccl" if place.cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_agree(flag: bool, place: Placement) -> bool:
    """True only when ``flag`` is true on every rank (so all ranks stop at the same step)."""
    if place.world < 2:
        return flag
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if place.cuda else "cpu"
    vote = torch.tensor([0 if flag else 1], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return not bool(vote.item())


def _latest_epoch(run: RunFolder) -> Any:
    try:
        return run.status().get("latest_epoch")
    except XnatMlError:
        return None


def run_workers(run: RunFolder, processes: int, on_sync: RunSync | None) -> int:
    """Start ``processes`` workers on the run folder and wait for them; their exit code.

    Every new ``latest.pt`` (a validation interval) is handed to ``on_sync`` from here, and once
    more at the end."""
    command = [sys.executable, "-m", "xnat_ml.training.agent", "--standalone", "--nnodes=1",
               f"--nproc-per-node={processes}", "--max-restarts=0",
               "-m", "xnat_ml.training.runner", str(run.path)]  # fmt: skip
    env = {**os.environ, LAUNCHER_PID: str(os.getpid())}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    log.info("run %s: starting %d data-parallel processes", run.run_id, processes)
    seen = _latest_epoch(run)
    with subprocess.Popen(command, env=env) as workers:
        try:
            while workers.poll() is None:
                time.sleep(POLL_S)
                epoch = _latest_epoch(run)
                if epoch != seen:
                    seen = epoch
                    sync_run(run, on_sync)
        except BaseException:
            workers.terminate()
            workers.wait()
            raise
    sync_run(run, on_sync)
    return workers.returncode
