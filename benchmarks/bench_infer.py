"""`xnat-ml infer` per session: its model part against the bundle run bare, and its fixed costs.

    .venv/bin/python benchmarks/bench_infer.py [--sessions 3] [--rounds 5] [--device cpu]
        [--threads N]

An embedded server holds the sample project (`--sessions` subjects, DICOM only) and the
`sample-tissues-cpu` template installed as model `tissues` v1 (its full network, random weights:
the time, not the accuracy, is measured), with a dataset version as its lineage so that `infer`
picks the scans as it does in a project. One `--no-store` run first pulls the model and parses
it (the cold numbers); everything after is warm.

Per session, in this process and on the same torch threads:

- **model part**: `predict.infer` on the session's T1w converted from its DICOM, the result
  written as a NIfTI (what `infer` does), against the bundle's own `inference.json` run as MONAI
  runs it: `ConfigParser`, `initialize` (weights by its `CheckpointLoader`), then its
  `evaluator` (dataloader, inferer, post-processing with `Invertd` and `SaveImaged`) on the
  same NIfTI. The sides alternate `--rounds` times after one untimed run each; the ratio of
  the medians is judged (target <= 1.2), and the two label volumes are compared voxel by voxel.
- **fixed costs**: a stored `infer_session` run's phases (`Inferred.timings`): DICOM download,
  conversion, SEG and label map writing, upload (SEG through /xapi/roi, then the LABELMAP);
  their sum is judged (target <= 2 s a session). The checks before (role, model, lineage,
  scans) and the model phase are printed beside them.

Exits 1 when a session misses either target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "training_configs" / "sample-tissues-cpu"
PROJECT, MODEL, DATASET = "BENCH", "tissues", "tissues-data"
TARGET_RATIO, TARGET_FIXED_S = 1.2, 2.0
FIXED = ("download", "conversion", "result", "store")
DEFINITION = {
    "criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "/^T1w/", "ResourceLabel": "NIFTI"},
        "Labels": {"tag": "label", "Source": "roiCollection"}}}],
}  # fmt: skip


def load() -> str:
    return "load {:.1f}/{:.1f}/{:.1f} on {} cores".format(*os.getloadavg(), os.cpu_count())


def model_folder(folder: Path) -> Path:
    """The template as a model folder: its card naming the dataset version, random weights."""
    import torch
    from monai.bundle import ConfigParser

    shutil.copytree(TEMPLATE, folder)
    card = json.loads((folder / "model.json").read_text())
    card["dataset"] = {"name": DATASET, "version": "1"}
    (folder / "model.json").write_text(json.dumps(card))
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    torch.manual_seed(0)
    (folder / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(),
               folder / "models" / "model.pt")  # fmt: skip
    return folder


def converted(session, session_id: str, folder: Path) -> Path:
    """The session's T1w NIfTI as `infer` converts it (the scan its criteria pick)."""
    from xnat_ml.imaging.series import load_series, save_nifti
    from xnat_ml.layout import DICOM_RESOURCE
    from xnat_ml.xnat import download_resource, list_rows
    from xnat_ml.xnat.uris import experiment_uri, resource_uri, scan_uri

    rows = list_rows(session, f"{experiment_uri(session_id)}/scans")
    [scan] = [r["ID"] for r in rows if str(r.get("series_description", "")).startswith("T1w")]
    download_resource(session, resource_uri(scan_uri(session_id, scan), DICOM_RESOURCE),
                      folder / "dicom")  # fmt: skip
    return save_nifti(load_series(folder / "dicom").to_nifti(), folder / "image.nii.gz")


class Bare:
    """The bundle's inference.json parsed and initialised as `monai.bundle run` does it, on
    one image; each call runs its evaluator once (SaveImaged writes the label NIfTI)."""

    def __init__(self, model_dir: Path, image: Path, device: str, out: Path) -> None:
        import torch
        from monai.bundle import ConfigParser

        card = json.loads((model_dir / "model.json").read_text())
        self.parser = ConfigParser()
        self.parser.read_config(str(model_dir / "configs" / "inference.json"))
        self.parser.read_meta(str(model_dir / "configs" / "metadata.json"))
        self.parser.update(card["overrides"])
        self.parser.update({"bundle_root": str(model_dir), "device": torch.device(device),
                            "output_dir": str(out), "datalist": [str(image)]})  # fmt: skip
        self.parser.get_parsed_content("initialize")
        self.evaluator = self.parser.get_parsed_content("evaluator")
        self.out = out

    def __call__(self) -> None:
        self.evaluator.run()

    def result(self) -> np.ndarray:
        [path] = self.out.rglob("*.nii.gz")
        return np.asarray(nib.load(path).dataobj)


def ours(model_dir: Path, image: Path, device: str, out: Path):
    """`infer`'s model phase: `predict.infer` and its result written."""
    from xnat_ml.inference.predict import infer

    def run() -> None:
        infer(model_dir, [image], device).to_filename(out)

    return run


def timed(run) -> tuple[float, float]:
    """Wall and process CPU seconds of ``run()``."""
    started, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - started, time.process_time() - cpu


def model_part(model_dir: Path, image: Path, device: str, rounds: int, work: Path) -> dict:
    """Both sides warm (one untimed run each), then alternating; medians, their ratio, and
    how many voxels of the two label volumes agree."""
    import torch

    bare = Bare(model_dir, image, device, work / "bare")
    mine = ours(model_dir, image, device, work / "prediction.nii.gz")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seconds: dict[str, list[float]] = {"bare": [], "xnat_ml": []}
    cpu: dict[str, list[float]] = {"bare": [], "xnat_ml": []}
    for i in range(rounds + 1):
        for name, run in (("bare", bare), ("xnat_ml", mine)):
            wall, used = timed(lambda r=run: (r(), sync()))
            if i:
                seconds[name].append(wall)
                cpu[name].append(used)
    predicted = np.asarray(nib.load(work / "prediction.nii.gz").dataobj)
    agree = float(np.mean(bare.result() == predicted))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    return {**{f"{n}_s": v for n, v in medians.items()}, "agree": agree,
            "ratio": medians["xnat_ml"] / medians["bare"],
            "ratio_fastest": min(seconds["xnat_ml"]) / min(seconds["bare"]),
            "ratio_cpu": cpu_medians["xnat_ml"] / cpu_medians["bare"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3, help="sample subjects (sessions)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default torch's own)")
    args = parser.parse_args()
    import torch

    from xnat_ml.datasets.versions import write_version
    from xnat_ml.inference.project_infer import infer_session
    from xnat_ml.sample.project import build_sample_project
    from xnat_ml.server.process import ServerProcess
    from xnat_ml.training.project_models import install_model
    from xnat_ml.xnat import connect

    if args.threads:
        torch.set_num_threads(args.threads)
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        with ServerProcess(work / "data") as server, \
                connect(server.url, server.user, server.password) as session:  # fmt: skip
            started = time.perf_counter()
            built = build_sample_project(session, PROJECT, subjects=args.sessions,
                                         progress=lambda _line: None)  # fmt: skip
            write_version(session, PROJECT, DATASET, {
                "definition.json": json.dumps(DEFINITION), "dataset_0.json": "{}",
                "report.json": "{}", "report.md": ""})  # fmt: skip
            install_model(session, PROJECT, model_folder(work / "model"), MODEL)
            print(f"sample project: {len(built)} sessions, model {MODEL} v1 installed, in "
                  f"{time.perf_counter() - started:.1f} s; device {args.device}, "
                  f"{torch.get_num_threads()} torch threads")  # fmt: skip
            cold = infer_session(session, PROJECT, built[0].session_id, MODEL, device=args.device,
                                 store=False, to=work / "cold", cache=cache)  # fmt: skip
            print("cold run (--no-store): " + phases(cold.timings))
            for entry in built:
                done = infer_session(session, PROJECT, entry.session_id, MODEL,
                                     device=args.device, cache=cache)  # fmt: skip
                fixed = sum(done.timings.get(name, 0.0) for name in FIXED)
                image = converted(session, entry.session_id, work / entry.session_id)
                model_dir = cache / "models" / PROJECT / MODEL / "v1"
                part = model_part(model_dir, image, args.device, args.rounds,
                                  work / entry.session_id)  # fmt: skip
                passed = part["ratio"] <= TARGET_RATIO and fixed <= TARGET_FIXED_S
                ok = ok and passed
                rows.append((entry.session_label, nib.load(image).shape, part, fixed, done))
                print(f"{entry.session_label} {nib.load(image).shape}: model part "
                      f"{part['xnat_ml_s']:.2f} s vs bare {part['bare_s']:.2f} s (medians of "
                      f"{args.rounds}), ratio {part['ratio']:.3f} (target <= {TARGET_RATIO}; "
                      f"fastest runs {part['ratio_fastest']:.3f}, CPU time "
                      f"{part['ratio_cpu']:.3f}); "
                      f"voxels agreeing {part['agree']:.4%}; fixed costs {fixed:.2f} s "
                      f"(target <= {TARGET_FIXED_S:.0f} s): {'PASS' if passed else 'FAIL'}; "
                      f"{load()}")  # fmt: skip
                print(f"    phases of the stored run: {phases(done.timings)}")
    ratios = [row[2]["ratio"] for row in rows]
    fixed = [row[3] for row in rows]
    print(f"{len(rows)} sessions: model part / bare bundle, ratio {min(ratios):.3f}-"
          f"{max(ratios):.3f} (target <= {TARGET_RATIO}); fixed costs (download, conversion, "
          f"SEG and label map, upload) {min(fixed):.2f}-{max(fixed):.2f} s a session (target <= "
          f"{TARGET_FIXED_S:.0f} s): {'PASS' if ok else 'FAIL'} ({load()})")  # fmt: skip
    return 0 if ok else 1


def phases(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items())


if __name__ == "__main__":
    raise SystemExit(main())
