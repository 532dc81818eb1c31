"""Quality of `sample-tissues-cpu` on the sample project: time to Dice, within a time budget.

    .venv/bin/python benchmarks/bench_train_quality.py [--subjects 12] [--budget 600]
        [--work DIR] [--config training_configs/sample-tissues-cpu.json]

The whole path a project owner takes, through the real pieces: the embedded server with the
roi-to-mask subscription, the sample project (each ROI collection gets its LABELMAP), a dataset
built from a definition (T1w + LABELMAP, split 8/2/2 by subject) and fetched, then the template
run through the training core (`prepare_run`, and `python -m xnat_ml.training.runner`, stopped
at the budget as a Slurm time limit would). The server is stopped before training starts.

Printed: the validation curve (wall time from launch, epoch, validation mean Dice), the time to
validation Dice 0.85 / 0.88 / 0.90, the seconds per iteration, the load average next to each
figure, and the testing split's Dice (MONAI DiceMetric per class, mean over grey and white
matter) of the best checkpoint, computed in the bundle's own validation space (2 mm, 96^3).
Exit 0 when that Dice reaches --target. The curve is saved as a PNG in the work folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT, DATASET = "SAMPLE", "tissues"
MILESTONES = (0.85, 0.88, 0.90)
METRIC = "val_mean_dice"
DEFINITION = {
    "criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "T1w%", "ResourceLabel": "NIFTI"},
        "Labels": {"tag": "label", "Source": "roiCollection"}}}],
    "split": {"training": 8, "validation": 2, "testing": 2, "seed": 0},
}  # fmt: skip


def load() -> str:
    return "load {:.1f}/{:.1f}/{:.1f} on {} cores".format(*os.getloadavg(), os.cpu_count())


def make_dataset(work: Path, subjects: int) -> Path:
    """Server, sample project with label maps, dataset version, fetched; the local datalist."""
    from xnat_ml.datasets.fetch import fetch_dataset
    from xnat_ml.datasets.project_build import build_in_project
    from xnat_ml.demo import _install_subscriptions, _report_jobs, _wait_for_jobs
    from xnat_ml.sample import build_sample_project
    from xnat_ml.server.process import ServerProcess
    from xnat_ml.xnat import connect

    started = time.monotonic()
    with ServerProcess(work / "archive") as server, connect(server.url, "admin", "admin") as xs:
        _install_subscriptions(xs, PROJECT)
        before = {j["id"] for j in xs.get_json("/xapi/containers", query={"project": PROJECT})}
        built = build_sample_project(xs, PROJECT, subjects, progress=lambda _: None)
        jobs = _wait_for_jobs(xs, PROJECT, before, sum(1 for b in built if b.created))
        _report_jobs(xs, [j for j in jobs if j["status"] != "Complete"])  # raises on one
        print(f"sample project: {subjects} subjects with label maps in "
              f"{time.monotonic() - started:.0f} s ({load()})")  # fmt: skip
        done = build_in_project(xs, PROJECT, json.dumps(DEFINITION), DATASET)
        summary = done.build.report["summary"]
        fetched = fetch_dataset(xs, PROJECT, DATASET, work / "data", cache=work / "cache",
                                progress=False)  # fmt: skip
    doc = json.loads(fetched.datalist.read_text())
    print(f"dataset {DATASET}: {summary['included']} sessions in; training "
          f"{doc['numTraining']}, validation {doc['numValidation']}, testing "
          f"{doc['numTesting']}; fetched to {fetched.datalist.parent}")  # fmt: skip
    return fetched.datalist


def train(work: Path, config_path: Path, datalist: Path, budget: float, threads: int) -> dict:
    """Prepare the run and train until it ends or the budget is spent; timing facts."""
    from xnat_ml.training import parse_config, prepare_run

    value = json.loads(config_path.read_text())
    value["dataset"] = {"name": DATASET, "version": "bench"}
    config = parse_config(value, str(config_path))
    model_dir = config_path.with_suffix("")
    run = prepare_run(work / "run", config, model_dir, datalist)
    loads: list[float] = []
    started = time.monotonic()
    first_running = None
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    output = work / "runner.out"  # a file, not a pipe: a full pipe would stall the run
    with open(output, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "xnat_ml.training.runner", str(run.path)],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    stopped = False
    while process.poll() is None:
        now = time.monotonic() - started
        if first_running is None and run.status().get("state") == "running":
            first_running = now
        if now >= budget:
            process.send_signal(signal.SIGTERM)
            process.wait()
            stopped = True
            break
        loads.append(os.getloadavg()[0])
        time.sleep(1.0)
    wall = time.monotonic() - started
    if not stopped and process.returncode != 0:
        raise SystemExit(f"training run {run.path} failed:\n{output.read_text()[-2000:]}")
    return {"run": run.path, "wall_s": wall, "startup_s": first_running or 0.0,
            "stopped_at_budget": stopped, "mean_load": sum(loads) / max(len(loads), 1)}  # fmt: skip


def curve(run_dir: Path, startup_s: float) -> list[dict]:
    """Validation rows of metrics.csv, with wall time from launch."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(METRIC)]
    return [{"t": startup_s + float(r["elapsed_s"]), "epoch": int(r["epoch"]),
             "iteration": int(r["iteration"]), "dice": float(r[METRIC])} for r in rows]  # fmt: skip


def testing_dice(run_dir: Path, datalist: Path) -> tuple[float, list[float]]:
    """Mean and per-class Dice of the run's best checkpoint on the testing split, through the
    bundle's own network, validation transforms and inferer."""
    import torch
    from monai.bundle import ConfigParser
    from monai.data import load_decathlon_datalist
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    record = json.loads((run_dir / "run.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(run_dir / "bundle" / "configs" / "train.json"))
    for key, value in record["bundle_overrides"].items():
        parser[key] = value
    parser["bundle_root"] = str(run_dir / "bundle")
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    network.eval()
    transform = parser.get_parsed_content("validate#preprocessing")
    inferer = parser.get_parsed_content("validate#inferer")
    classes = int(parser.get_parsed_content("num_classes"))
    metric = DiceMetric(include_background=False, reduction="mean_batch")
    with torch.no_grad():
        for item in load_decathlon_datalist(str(datalist), True, "testing"):
            data = transform(item)
            logits = inferer(data["image"][None], network)
            pred = one_hot(logits.argmax(1, keepdim=True), classes)
            metric(pred, one_hot(data["label"][None].long(), classes))
    per_class = [float(v) for v in metric.aggregate()]
    return sum(per_class) / len(per_class), per_class


def save_plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p["t"] / 60 for p in points], [p["dice"] for p in points], marker=".")
    for level in MILESTONES:
        ax.axhline(level, color="grey", linewidth=0.5, linestyle="--")
    ax.set(xlabel="minutes since launch", ylabel="validation mean Dice (GM, WM)", title=title,
           ylim=(0.0, 1.0))  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--target", type=float, default=0.88, help="testing Dice to reach")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the run (default: torch's, one per core); 1 is "
                        "much faster on a machine that other work keeps busy")  # fmt: skip
    parser.add_argument(
        "--config", type=Path, default=ROOT / "training_configs" / "sample-tissues-cpu.json"
    )
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder, kept (default: a new temporary one); an existing "
                        "one reuses its archive and fetch cache")  # fmt: skip
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-train-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "run", ignore_errors=True)
    datalist = make_dataset(work, args.subjects)
    print(f"training {args.config.name} for at most {args.budget:.0f} s ({load()})")
    facts = train(work, args.config, datalist, args.budget, args.threads)
    points = curve(facts["run"], facts["startup_s"])
    status = json.loads((facts["run"] / "status.json").read_text())
    png = work / "dice-curve.png"
    save_plot(points, png, f"{args.config.stem}, {args.subjects} subjects")
    print(f"\n{'t (s)':>7} {'epoch':>5} {'iter':>5} {'val Dice':>8}")
    for p in points:
        print(f"{p['t']:7.0f} {p['epoch']:5d} {p['iteration']:5d} {p['dice']:8.4f}")
    iterations = points[-1]["iteration"] if points else 0
    train_s = points[-1]["t"] - facts["startup_s"] if points else 0.0
    print(f"\nstart-up (process, bundle, caching the data) {facts['startup_s']:.1f} s; "
          f"{iterations} iterations in {train_s:.0f} s = {train_s / max(iterations, 1):.2f} s "
          f"per iteration (validation included); mean load {facts['mean_load']:.1f} on "
          f"{os.cpu_count()} cores")  # fmt: skip
    for level in MILESTONES:
        hit = next((p for p in points if p["dice"] >= level), None)
        print(
            f"time to validation Dice {level:.2f}: "
            + (f"{hit['t']:.0f} s (epoch {hit['epoch']}, iteration {hit['iteration']})"
               if hit else "not reached")  # fmt: skip
        )
    ended = "stopped at the budget" if facts["stopped_at_budget"] else status["state"]
    if status.get("best_metric") is None:
        print(f"run {ended} after {facts['wall_s']:.0f} s before its first validation")
        return 1
    print(f"run {ended} after {facts['wall_s']:.0f} s, epoch {status['epoch']}, best validation "
          f"Dice {status['best_metric']:.4f} (epoch {status['best_epoch']})")  # fmt: skip
    mean, per_class = testing_dice(facts["run"], datalist)
    ok = mean >= args.target
    print(f"testing split Dice of the best checkpoint: {mean:.4f} (grey {per_class[0]:.4f}, "
          f"white {per_class[1]:.4f}); target >= {args.target}: {'PASS' if ok else 'FAIL'} "
          f"({load()})")  # fmt: skip
    print(f"curve: {png}; run folder: {facts['run']}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
