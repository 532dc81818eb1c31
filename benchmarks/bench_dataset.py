"""Dataset build of a 1,000-session project, against the embedded server on loopback.

    .venv/bin/python benchmarks/bench_dataset.py [--sessions 1000]

Creates the sessions with plain REST PUTs (a T1w scan with a tiny NIfTI; an ROI collection with
a tiny label map and, as roi-to-mask writes it, masks.json recording the image's MD5 and grid;
every session's files differ), then counts HTTP requests with a requests response hook for:
the listing and a first build (empty inspection cache; both judged: target <= 20 requests and
<= 5 s), a rebuild, a build after 10 % more sessions, and a first build that ignores the
roi-to-mask records (image headers read one by one), and a first build of a definition that
takes only human collections (``Origin``: the records' origins read before matching; it should
cost the first build's requests). Printed next to them, timed on 50
sessions and scaled: the one-request-per-session-and-file way (walking each session's scans,
assessors, resources and files, then reading each image header and label file), and the first
build's ratio against it. Exits 1 unless both targets are met.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from xnat_ml.datasets import inspector
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
HUMAN = json.loads(json.dumps(DEFINITION))
HUMAN["criteria"][0]["payload"]["Labels"]["Origin"] = "human"
LABELS = np.eye(4)[:, :, None] * np.ones((4, 4, 4))


class Counter:
    def __init__(self, session) -> None:
        self.count = 0
        session.interface.hooks["response"].append(self)

    def __call__(self, response, *args, **kwargs):
        self.count += 1


def add(session, index: int) -> None:
    affine = np.eye(4)
    affine[:3, 3] = (index % 97, index // 97, 0)  # every session's files differ
    image = nifti_bytes(affine=affine)
    session_id = add_session(session, "BENCH", f"S{index:04d}", f"S{index:04d}_MR",
                             [SynthScan("1", "T1w", f"1.2.{index}", image)],
                             [SynthRoi(f"R{index:04d}", f"1.2.{index}",
                                       nifti_bytes(LABELS, affine=affine))])  # fmt: skip
    record = {"origin": "human", "image": {"md5": hashlib.md5(image).hexdigest(),
                                           "shape": [4, 4, 4], "affine": affine.tolist()}}
    session.put(f"/data/experiments/{session_id}/assessors/R{index:04d}/resources/LABELMAP/"
                "files/masks.json", data=json.dumps(record).encode(),
                headers={"Content-Type": "application/octet-stream"})  # fmt: skip


def one_by_one(session, rows: list[dict]) -> None:
    """The per-session way: walk the object tree, then one request per file."""
    for row in rows:
        uri = f"/data/experiments/{row['ID']}"
        for kind in ("scans", "assessors"):
            for child in list_rows(session, f"{uri}/{kind}"):
                owner = f"{uri}/{kind}/{child['ID']}"
                for resource in list_rows(session, f"{owner}/resources"):
                    for file in list_rows(session, f"{owner}/resources/{resource['label']}/files"):
                        if file["Name"].endswith(".nii.gz"):
                            header = {} if kind == "assessors" else {"Range": "bytes=0-4095"}
                            url = session._format_uri(file["URI"])
                            session.interface.get(url, headers=header).close()


def timed(counter: Counter, what):
    counter.count = 0
    started = time.perf_counter()
    result = what()
    return result, counter.count, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    n, grown = args.sessions, args.sessions + args.sessions // 10
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        with ServerProcess(Path(tmp) / "data") as server, \
                connect(server.url, "admin", "admin") as session:  # fmt: skip
            session.put("/data/projects/BENCH")
            started = time.perf_counter()
            for i in range(n):
                add(session, i)
            made_s = time.perf_counter() - started
            counter = Counter(session)

            def build(cache: str, definition=DEFINITION, **kw):
                return build_in_project(session, "BENCH", json.dumps(definition), "bench",
                                        cache=Path(tmp) / cache, **kw)  # fmt: skip

            sessions, resolve_n, resolve_s = timed(counter, lambda: list_sessions(session, "BENCH"))
            rows = list_rows(session, "/data/experiments", project="BENCH")[:50]
            _, walk_n, walk_s = timed(counter, lambda: one_by_one(session, rows))
            walk_n, walk_s = walk_n * n / len(rows), walk_s * n / len(rows)
            first, first_n, first_s = timed(counter, lambda: build("cache"))
            _, again_n, again_s = timed(counter, lambda: build("cache"))
            for i in range(n, grown):
                add(session, i)
            _, grown_n, grown_s = timed(counter, lambda: build("cache"))
            _, plain_n, plain_s = timed(counter, lambda: build("cache-plain", dry_run=True))
            _, human_n, human_s = timed(counter, lambda: build("cache-human", HUMAN, dry_run=True))
            inspector.MASKS_INDEX = "(ignored)"  # no roi-to-mask records: headers one by one
            _, bare_n, bare_s = timed(counter, lambda: build("cache-bare"))
    summary = first.build.report["summary"]
    listing_ok = _met(resolve_n, resolve_s) and len(sessions) == n
    build_ok = _met(first_n, first_s) and summary["included"] == n
    print(f"created {n} sessions (scan + ROI collection, 3 files each) in {made_s:.1f} s")
    print(f"listing (bulk): {resolve_n} requests, {resolve_s:.2f} s; {_verdict(listing_ok)}")
    print(f"first build ({summary['included']} sessions in, labels zipped "
          f"{inspector.CHUNK_SESSIONS} sessions a request, image grids from roi-to-mask "
          f"records, version stored): {first_n} requests, {first_s:.2f} s; reads {first.reads}; "
          f"{walk_n / first_n:.0f}x fewer requests and {walk_s / first_s:.0f}x faster than one "
          f"request per session; {_verdict(build_ok)}")
    print(f"rebuild (nothing changed, inspection cache): {again_n} requests, {again_s:.1f} s")
    print(f"build after +10 % sessions ({grown}): {grown_n} requests, {grown_s:.1f} s")
    print(f"first build of {grown} sessions, dry run: {plain_n} requests, {plain_s:.1f} s; "
          f"with Origin human: {human_n} requests, {human_s:.1f} s")
    print(f"first build without roi-to-mask records (one header request per image): "
          f"{bare_n} requests, {bare_s:.1f} s")
    print(f"one request per session, object and file instead (from {len(rows)}): "
          f"{walk_n:.0f} requests, {walk_s:.1f} s")
    return 0 if listing_ok and build_ok else 1


def _met(requests: int, seconds: float) -> bool:
    return requests <= TARGET_REQUESTS and seconds <= TARGET_S


def _verdict(ok: bool) -> str:
    target = f"target <= {TARGET_REQUESTS} requests and <= {TARGET_S:.0f} s"
    return f"{target}: {'PASS' if ok else 'FAIL'}"


if __name__ == "__main__":
    raise SystemExit(main())
