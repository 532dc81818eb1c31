"""Dataset build of a 1,000-session project, against the embedded server on loopback.

    .venv/bin/python benchmarks/bench_dataset.py [--sessions 1000]

Creates the sessions with plain REST PUTs (T1w scan with a tiny NIfTI, an ROI collection with a
tiny label map), then builds a dataset and counts HTTP requests with a requests response hook.
Target for the listing (resolve): <= 20 requests and <= 5 s. Printed next to it, measured in the
same run: the one-request-per-session way (each session's scans, assessors, and resources and
files of each, as a client walking the object tree does), timed on 50 sessions and scaled, and
the whole build (listing + reading every image header and label file in parallel).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from xnat_ml.datasets.project_build import build_in_project
from xnat_ml.datasets.resolver import list_sessions
from xnat_ml.sample.synthetic import SynthRoi, SynthScan, add_session, nifti_bytes
from xnat_ml.server.process import ServerProcess
from xnat_ml.xnat import connect, list_rows

TARGET_REQUESTS, TARGET_S = 20, 5.0
DEFINITION = {
    "criteria": [{"payload": {"Images": {"SeriesDescription": "T1w"},
                              "Labels": {"tag": "label", "Source": "roiCollection"}}}],
    "labelmap": {"labels": [{"name": "tissue", "value": 1}]},
}  # fmt: skip


class Counter:
    def __init__(self, session) -> None:
        self.count = 0
        session.interface.hooks["response"].append(self)

    def __call__(self, response, *args, **kwargs):
        self.count += 1


def one_by_one(session, rows: list[dict]) -> None:
    for row in rows:
        uri = f"/data/experiments/{row['ID']}"
        for kind in ("scans", "assessors"):
            for child in list_rows(session, f"{uri}/{kind}"):
                owner = f"{uri}/{kind}/{child['ID']}"
                for resource in list_rows(session, f"{owner}/resources"):
                    list_rows(session, f"{owner}/resources/{resource['label']}/files")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    image, labels = nifti_bytes(), nifti_bytes(np.eye(4)[:, :, None] * np.ones((4, 4, 4)))
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        with ServerProcess(tmp) as server, connect(server.url, "admin", "admin") as session:
            session.put("/data/projects/BENCH")
            started = time.perf_counter()
            for i in range(args.sessions):
                add_session(session, "BENCH", f"S{i:04d}", f"S{i:04d}_MR",
                            [SynthScan("1", "T1w", f"1.2.{i}", image)],
                            [SynthRoi(f"R{i:04d}", f"1.2.{i}", labels)])  # fmt: skip
            made_s = time.perf_counter() - started
            counter = Counter(session)
            started = time.perf_counter()
            sessions = list_sessions(session, "BENCH")
            resolve_s, resolve_n = time.perf_counter() - started, counter.count
            rows = list_rows(session, "/data/experiments", project="BENCH")[:50]
            counter.count = 0
            started = time.perf_counter()
            one_by_one(session, rows)
            scale = args.sessions / len(rows)
            walk_s, walk_n = (time.perf_counter() - started) * scale, counter.count * scale
            counter.count = 0
            started = time.perf_counter()
            done = build_in_project(session, "BENCH", json.dumps(DEFINITION), "bench")
            build_s, build_n = time.perf_counter() - started, counter.count
    ok = resolve_n <= TARGET_REQUESTS and resolve_s <= TARGET_S and len(sessions) == args.sessions
    print(f"created {args.sessions} sessions (scan + ROI collection + 2 files each) in "
          f"{made_s:.1f} s")  # fmt: skip
    print(f"resolve (bulk listings): {resolve_n} requests, {resolve_s:.2f} s; target <= "
          f"{TARGET_REQUESTS} requests and <= {TARGET_S:.0f} s: {'PASS' if ok else 'FAIL'}")
    print(f"  one request per session and object instead: {walk_n:.0f} requests, "
          f"{walk_s:.1f} s (from {len(rows)}) = {walk_s / resolve_s:.0f} x slower")
    summary = done.build.report["summary"]
    print(f"whole build ({summary['included']} sessions in, every image header and label file "
          f"read, 8 in parallel, version stored): {build_n} requests, {build_s:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
