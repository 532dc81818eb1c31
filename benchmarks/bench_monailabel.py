"""The MONAI Label API's infer for one session against the bundle run bare in-process.

    .venv/bin/python benchmarks/bench_monailabel.py [--rounds 5] [--device cpu]

An embedded server (`xnat-ml serve`, which mounts the API at /monailabel/<project>/) holds one
sample session (DICOM only) and the `sample-tissues-cpu` template installed as model `tissues`
v1 (full network, random weights: bench_infer.py's model folder). Measured:

- **cold start**: the first `POST infer/tissues?image=<T1w SeriesInstanceUID>&output=image`
  (`.nrrd`), as 3D Slicer or OHIF sends it: the server pulls the model, parses its bundle,
  downloads and converts the series, infers and writes the NRRD;
- **warm**: the same request again (model and converted series kept), against the bundle's own
  `inference.json` run as MONAI runs it (bench_infer.Bare: evaluator with its dataloader,
  Invertd and SaveImaged) on the same series converted to NIfTI, in this process. The two
  sides alternate `--rounds` times after an untimed run each; the ratio of the medians is
  judged (target <= 1.3): it holds the HTTP round trip, the caller's checks (role, model,
  image listing), the NRRD writing and the answer's transfer.

Exits 1 when the warm ratio misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import DATASET, DEFINITION, MODEL, Bare, load, model_folder, timed  # noqa: E402

PROJECT = "BENCHML"
TARGET_RATIO = 1.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from xnat_ml.datasets.versions import write_version
    from xnat_ml.imaging.series import load_series, save_nifti
    from xnat_ml.sample.project import build_sample_project
    from xnat_ml.server.process import ServerProcess
    from xnat_ml.training.project_models import install_model
    from xnat_ml.xnat import connect, download_resource

    with tempfile.TemporaryDirectory(prefix="bench-monailabel-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
        with ServerProcess(work / "data", env=env) as server, \
                connect(server.url, server.user, server.password) as session:  # fmt: skip
            [built] = build_sample_project(session, PROJECT, subjects=1,
                                           progress=lambda _line: None)  # fmt: skip
            write_version(session, PROJECT, DATASET, {
                "definition.json": json.dumps(DEFINITION), "dataset_0.json": "{}",
                "report.json": "{}", "report.md": ""})  # fmt: skip
            model = model_folder(work / "model")
            install_model(session, PROJECT, model, MODEL)
            scans = session.get_json(f"/data/experiments/{built.session_id}/scans",
                                     query={"format": "json"})["ResultSet"]["Result"]  # fmt: skip
            t1 = next(s["ID"] for s in scans if s["series_description"].startswith("T1w"))
            download_resource(session, f"/data/experiments/{built.session_id}/scans/{t1}/"
                              "resources/DICOM", work / "t1")  # fmt: skip
            series = load_series(work / "t1")
            image = save_nifti(series.to_nifti(), work / "t1.nii.gz")
            http = requests.Session()
            http.auth = (server.user, server.password)
            url = f"{server.url}/monailabel/{PROJECT}/infer/{MODEL}"
            query = {"image": series.series_uid, "output": "image"}
            form = {"params": (None, json.dumps({"result_extension": ".nrrd"}))}

            def api() -> None:
                answer = http.post(url, params=query, files=form, timeout=600)
                answer.raise_for_status()

            cold, _ = timed(api)
            print(f"one session {series.shape}, device {args.device}; cold start (first "
                  "infer call: model pull and parse, DICOM download and conversion): "
                  f"{cold:.2f} s")  # fmt: skip
            bare = Bare(model, image, args.device, work / "bare")
            seconds: dict[str, list[float]] = {"bare": [], "api": []}
            for i in range(args.rounds + 1):
                for name, run in (("bare", bare), ("api", api)):
                    wall, _ = timed(run)
                    if i:
                        seconds[name].append(wall)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = medians["api"] / medians["bare"]
    passed = ratio <= TARGET_RATIO
    print(f"warm infer through the API {medians['api']:.2f} s vs the bundle bare "
          f"{medians['bare']:.2f} s (medians of {args.rounds}): ratio {ratio:.3f} (target <= "
          f"{TARGET_RATIO}; fastest runs {min(seconds['api']) / min(seconds['bare']):.3f}): "
          f"{'PASS' if passed else 'FAIL'} ({load()})")  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
