"""GPU check of the training core, for a lent GPU machine without network (under 5 minutes).

    python benchmarks/gpu_check.py [--out DIR]      # DIR default: $OUT, else the current folder

Needs torch (the machine's own) and the wheels `benchmarks/gpu_wheelhouse.sh` gathers; run from
a checkout (PYTHONPATH=.) or with the xnat-ml wheel installed. It writes its own synthetic NIfTI
volumes (no server, no sample project) and measures:

a. overhead: the `sample-tissues-cpu` bundle on cuda with AMP, through xnat-ml (`prepare_run` /
   `execute_run`, all handlers) against a bare loop over the same components
   (`bench_train_overhead.py`); target ratio <= 1.05.
b. input pipeline: training iterations fed from the NIfTI files through the bundle's transforms
   (without the cache; CacheDataset with the template's DataLoader, with a ThreadDataLoader and
   workers, and with the cache held on the GPU and a ThreadDataLoader), against iterations on
   synthetic tensors already on the GPU; target >= 90 % of the synthetic rate for the best.

Everything is printed as one JSON object on stdout and written to DIR/gpu_check.json; progress
goes to stderr. Without CUDA it says so and runs the same steps on the CPU, smaller, so that
the script itself is tested anywhere (the targets are then not judged).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_overhead import (  # noqa: E402 - the benchmark's folder is not a package
    TARGET_RATIO,
    bundle_parser,
    compare,
    make_config,
    make_volumes,
    step_fn,
)

TARGET_FEED = 0.90
# Ways to feed the network: the benchmark's own edits of the template's bundle ids.
FEEDS: dict[str, dict[str, Any]] = {
    "no cache, DataLoader, workers 0": {"train#dataset#cache_rate": 0.0},
    "template DataLoader, workers 0": {},
    "ThreadDataLoader, 4 workers": {"train#dataloader#_target_": "ThreadDataLoader",
                                    "train#dataloader#num_workers": 4},
    "cache on the GPU, ThreadDataLoader": {"train#dataloader#_target_": "ThreadDataLoader",
                                           "train#deterministic_transforms#6#device": "@device"},
}  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def iterations_per_s(step, batches, count: int, warmup: int, device) -> float:
    """Rate of ``count`` steps after ``warmup``; ``batches`` yields (image, label) on device."""
    import torch

    done, started = 0, None
    for image, label in batches:
        if done == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        step(image, label)
        done += 1
        if done == warmup + count:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def feed_check(datalist: Path, size: int, device_name: str, amp: bool, count: int) -> dict:
    """Iterations per second fed by each way of loading, and on ready GPU tensors."""
    import torch
    from monai.utils import set_determinism

    out: dict[str, Any] = {}
    for name, overrides in {"synthetic tensors on the device": None, **FEEDS}.items():
        started = time.perf_counter()
        parser = bundle_parser(make_config(1, size, device_name, amp), datalist, overrides)
        set_determinism(seed=0)
        device = parser.get_parsed_content("device")
        network = parser.get_parsed_content("network")
        network.train()
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        step = step_fn(network, parser.get_parsed_content("loss"),
                       parser.get_parsed_content("optimizer"), scaler, device, amp)  # fmt: skip
        if overrides is None:
            batch = int(parser["batch_size"])
            image = torch.randn(batch, 1, size, size, size, device=device)
            label = torch.randint(0, 3, (batch, 1, size, size, size), device=device)
            batches = itertools.repeat((image, label))
        else:
            loader = parser.get_parsed_content("train#dataloader")

            def forever(loader=loader, device=device):
                while True:
                    for data in loader:
                        yield (data["image"].to(device, non_blocking=True),
                               data["label"].to(device, non_blocking=True))  # fmt: skip

            batches = forever()
        rate = iterations_per_s(step, batches, count, warmup=3, device=device)
        out[name] = {"iterations_per_s": round(rate, 3),
                     "setup_and_run_s": round(time.perf_counter() - started, 1)}  # fmt: skip
        log(f"feed {name}: {rate:.2f} iterations/s")
    reference = out["synthetic tensors on the device"]["iterations_per_s"]
    for name in FEEDS:
        out[name]["of_synthetic"] = round(out[name]["iterations_per_s"] / reference, 3)
    best = max(FEEDS, key=lambda n: out[n]["of_synthetic"])
    return {"feeds": out, "best": best, "best_of_synthetic": out[best]["of_synthetic"]}


def environment(cuda: bool) -> dict[str, Any]:
    import monai
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "monai": monai.__version__, "cpus": os.cpu_count(), "cuda": cuda,
            "load": [round(v, 2) for v in os.getloadavg()]}  # fmt: skip
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        device, amp, size, volumes, epochs, count = "cuda", True, 96, 26, 40, 40
    else:
        log("gpu_check: CUDA is not available: running the same steps on the CPU, small; "
            "the GPU targets are not judged")  # fmt: skip
        device, amp, size, volumes, epochs, count = "cpu", False, 32, 6, 2, 4
    # Whatever the work prints (the bundle's StatsHandler logs to stdout) goes to stderr, so
    # that stdout holds the JSON alone.
    stdout = os.dup(1)
    os.dup2(2, 1)
    started = time.perf_counter()
    result: dict[str, Any] = {"environment": environment(cuda), "device": device, "amp": amp,
                              "volume": [size] * 3}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        datalist = make_volumes(Path(tmp) / "data", count=volumes, size=size)
        log(f"{volumes} synthetic volumes of {size}^3 written in "
            f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        config = make_config(epochs, size, device, amp, val_interval=5 if cuda else 1)
        parts = {
            # Two rounds on cuda: the first side to run pays for CUDA's and cuDNN's warm-up.
            "overhead": lambda: compare(config, datalist, Path(tmp), 2 if cuda else 1, log),
            "input_pipeline": lambda: feed_check(datalist, size, device, amp, count),
        }
        for name, part in parts.items():
            # One part failing still leaves the other's figures: a device run is dear.
            try:
                result[name] = part()
            except Exception as exc:  # noqa: BLE001 - reported in the JSON, then go on
                traceback.print_exc()
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    judges = {"overhead": ("ratio_total", TARGET_RATIO, float.__le__),
              "input_pipeline": ("best_of_synthetic", TARGET_FEED, float.__ge__)}  # fmt: skip
    result["passed"] = {}
    for name, (key, target, holds) in judges.items():
        result[name]["target"] = target
        done = "error" not in result[name]
        result["passed"][name] = holds(float(result[name][key]), target) if done and cuda else None
    result["seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.flush()
    os.dup2(stdout, 1)
    text = json.dumps(result, indent=2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(text + "\n")
    print(text)
    return 1 if any("error" in result[name] for name in judges) else 0


if __name__ == "__main__":
    raise SystemExit(main())
