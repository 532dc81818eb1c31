"""Training through xnat-ml against a bare MONAI loop: same bundle, data and iterations.

    .venv/bin/python benchmarks/bench_train_overhead.py [--epochs 40] [--rounds 2]
        [--device cpu] [--amp]

Both sides take their network, loss, optimiser, transforms, datasets, loaders and inferer from
the `sample-tissues-cpu` bundle, parsed with the same overrides and seed, on the same synthetic
NIfTI volumes. xnat-ml runs the bundle's own `SupervisedTrainer` through `prepare_run` /
`execute_run` with all its handlers (status, metrics, TensorBoard, curves, best and latest
checkpoints). The bare side is the loop one writes by hand: forward, loss, backward, step, and
at each validation interval a sliding-window pass with Dice and the best weights saved. The
sides alternate (`--rounds`) so that a change in the machine's load hits both; the ratios of
the fastest round of each are printed (wall time in all, of the training loop alone, and the
process's CPU time, which a busy machine disturbs least; target <= 1.05), with the load average.
`gpu_check.py` reuses these functions on cuda.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "training_configs" / "sample-tissues-cpu.json"
TARGET_RATIO = 1.05


def load() -> str:
    return "load {:.1f}/{:.1f}/{:.1f} on {} cores".format(*os.getloadavg(), os.cpu_count())


def make_volumes(folder: Path, count: int = 10, size: int = 48, seed: int = 0) -> Path:
    """``count`` synthetic 2 mm T1w-like volumes with a two-tissue label each, and a datalist
    (the last two in validation); returns the datalist's path."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(np.float32)
    items = []
    for i in range(count):
        centre = size / 2 + rng.uniform(-3, 3, 3)
        radius = np.linalg.norm((grid - centre) / (size * rng.uniform(0.3, 0.4, 3)), axis=-1)
        label = np.where(radius < 0.6, 2, np.where(radius < 1.0, 1, 0)).astype(np.uint8)
        image = np.choose(label, [50.0, 600.0, 900.0]) + rng.normal(0, 40, label.shape)
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        names = {"image": f"img{i:02d}.nii.gz", "label": f"lab{i:02d}.nii.gz"}
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / names["image"])
        nib.save(nib.Nifti1Image(label, affine), folder / names["label"])
        items.append(names)
    datalist = folder / "dataset_0.json"
    datalist.write_text(json.dumps({"training": items[:-2], "validation": items[-2:]}))
    return datalist


def make_config(
    epochs: int, size: int, device: str, amp: bool, val_interval: int | None = None
):  # fmt: skip
    """The template's training config, resized for the synthetic volumes."""
    from xnat_ml.training import parse_config

    value = json.loads(TEMPLATE.read_text())
    value["dataset"] = {"name": "synthetic", "version": "1"}
    value["training"].update(epochs=epochs, patch_size=[size] * 3, device=device, amp=amp)
    if val_interval:
        value["training"]["val_interval"] = val_interval
    return parse_config(value, str(TEMPLATE))


def bundle_parser(config, datalist: Path, edits: dict[str, Any] | None = None) -> Any:
    """The bundle's train.json parsed with the overrides xnat-ml would make, data bound.
    ``edits``: the benchmark's own changes to the bundle (references, other classes), which
    a user's config may not make (configs hold plain values only), set on the parser last."""
    from monai.bundle import ConfigParser

    from xnat_ml.training.config import check_against_bundle
    from xnat_ml.training.runner import read_datalist

    model_dir = TEMPLATE.with_suffix("")
    parser = ConfigParser()
    parser.read_config(str(model_dir / "configs" / "train.json"))
    lists = read_datalist(datalist)
    bindings = {"bundle_root": str(model_dir), "dataset_dir": str(datalist.parent),
                "train#dataset#data": lists["training"],
                "validate#dataset#data": lists["validation"]}  # fmt: skip
    overrides = check_against_bundle(config, model_dir)
    for key, value in {**overrides, **bindings, **(edits or {})}.items():
        parser[key] = value
    return parser


def run_xnat_ml(config, datalist: Path, folder: Path) -> dict[str, float]:
    """prepare_run + execute_run; wall seconds in all and of the training loop alone."""
    from xnat_ml.training import execute_run, prepare_run

    started, cpu = time.perf_counter(), time.process_time()
    run = prepare_run(folder, config, TEMPLATE.with_suffix(""), datalist)
    status = execute_run(run.path)
    total = time.perf_counter() - started
    loop = float(run.metrics()[-1]["elapsed_s"])
    return {"total_s": total, "loop_s": loop, "cpu_s": time.process_time() - cpu,
            "iterations": status["iteration"], "best_dice": status["best_metric"]}  # fmt: skip


def step_fn(network, loss_fn, optimizer, scaler, device, amp: bool):
    """One training step (forward under autocast, scaled backward, optimiser step)."""
    import torch

    def step(image, label) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(network(image), label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def run_bare(config, datalist: Path, folder: Path) -> dict[str, float]:
    """The hand-written loop over the bundle's own components."""
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot
    from monai.utils import set_determinism

    started, cpu = time.perf_counter(), time.process_time()
    parser = bundle_parser(config, datalist)
    set_determinism(seed=config.training.seed)
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network")
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    train_loader = parser.get_parsed_content("train#dataloader")
    val_loader = parser.get_parsed_content("validate#dataloader")
    inferer = parser.get_parsed_content("validate#inferer")
    classes = int(parser.get_parsed_content("num_classes"))
    epochs, interval = int(parser["epochs"]), int(parser["val_interval"])
    amp = bool(config.training.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    dice = DiceMetric(include_background=False, reduction="mean")
    best, iterations = -1.0, 0
    folder.mkdir(parents=True, exist_ok=True)
    step = step_fn(network, loss_fn, optimizer, scaler, device, amp)
    loop_started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        for batch in train_loader:
            step(batch["image"].to(device), batch["label"].to(device))
            iterations += 1
        if epoch % interval:
            continue
        network.eval()
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            for batch in val_loader:
                logits = inferer(batch["image"].to(device), network)
                dice(one_hot(logits.argmax(1, keepdim=True), classes),
                     one_hot(batch["label"].to(device).long(), classes))  # fmt: skip
        value = float(dice.aggregate())
        dice.reset()
        if value > best:
            best = value
            torch.save(network.state_dict(), folder / "best.pt")
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    return {"total_s": end - started, "loop_s": end - loop_started,
            "cpu_s": time.process_time() - cpu, "iterations": iterations,
            "best_dice": best}  # fmt: skip


def compare(config, datalist: Path, work: Path, rounds: int, show=print) -> dict[str, Any]:
    """Alternate the two sides ``rounds`` times; the fastest round of each and their ratio."""
    sides: dict[str, list[dict[str, float]]] = {"xnat_ml": [], "bare": []}
    for i in range(rounds):
        for name, runner in (("bare", run_bare), ("xnat_ml", run_xnat_ml)):
            result = runner(config, datalist, work / f"{name}-{i}")
            result["load_1min"] = os.getloadavg()[0]
            sides[name].append(result)
            show(f"round {i + 1} {name:>8}: {result['total_s']:6.1f} s in all, loop "
                 f"{result['loop_s']:6.1f} s, CPU {result['cpu_s']:6.1f} s, "
                 f"{result['iterations']} iterations, best Dice "
                 f"{result['best_dice']:.3f} ({load()})")  # fmt: skip
    def ratio(key: str) -> float:
        return min(r[key] for r in sides["xnat_ml"]) / min(r[key] for r in sides["bare"])

    return {"rounds": sides, "ratio_total": ratio("total_s"), "ratio_loop": ratio("loop_s"),
            "ratio_cpu": ratio("cpu_s")}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--size", type=int, default=48, help="volume edge in voxels (2 mm)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-overhead-") as tmp:
        datalist = make_volumes(Path(tmp) / "data", size=args.size)
        config = make_config(args.epochs, args.size, args.device, args.amp)
        result = compare(config, datalist, Path(tmp), args.rounds)
    ok = result["ratio_total"] <= TARGET_RATIO
    print(f"xnat-ml / bare loop, fastest rounds: {result['ratio_total']:.3f} in all, "
          f"{result['ratio_loop']:.3f} for the training loop alone, {result['ratio_cpu']:.3f} "
          f"in CPU time; target <= {TARGET_RATIO}: "
          f"{'PASS' if ok else 'FAIL'} ({load()})")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
