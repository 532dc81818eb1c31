"""Write throughput with the crash-safe write protocol (journal.py) next to main's code.

    .venv/bin/python benchmarks/bench_journal.py [--files 40] [--kb 2000] [--slices 200]

Checks main's server code out into a temporary `git worktree` and starts one `xnat-ml serve`
from each tree (the old one via PYTHONPATH), each on its own data folder. Then, alternating
between the two servers for ROUNDS rounds, it times (a) FILES uploads of KB kilobytes each, one
PUT per file, and (b) the DICOM import of a zip of SLICES small slices, and prints the best
time of each next to the ratio journal / main (target: at most 1.05).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))
from dicom_samples import write_series, zip_folder  # noqa: E402

from xnat_ml.server.process import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def upload_files(server: ServerProcess, tag: str, blobs: list[bytes]) -> float:
    http = requests.Session()
    http.auth = (server.user, server.password)
    base = f"{server.url}/data/projects/BENCH/resources/R{tag}/files"
    started = time.perf_counter()
    for n, blob in enumerate(blobs):
        http.put(f"{base}/f{n}.bin", data=blob).raise_for_status()
    return time.perf_counter() - started


def import_zip(server: ServerProcess, tag: str, body: bytes) -> float:
    http = requests.Session()
    http.auth = (server.user, server.password)
    url = (f"{server.url}/data/services/import?import-handler=DICOM-zip&project=BENCH"
           f"&subject=S{tag}&session=E{tag}")
    started = time.perf_counter()
    http.post(url, data=body).raise_for_status()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40, help="uploads per round (default 40)")
    parser.add_argument("--kb", type=int, default=2000, help="size of each upload in kB")
    parser.add_argument("--slices", type=int, default=200, help="DICOM slices per import")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, best kept (default 3)")
    parser.add_argument("--ref", default="main", help="git ref to compare with (default main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        root = Path(tmp)
        old_tree = root / "main-tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_tree),
                        args.ref], check=True, capture_output=True)
        try:
            blobs = [os.urandom(args.kb * 1000) for _ in range(args.files)]
            write_series(root / "series", slices=args.slices)
            body = zip_folder(root / "series")
            servers = {
                "journal": ServerProcess(root / "new"),
                args.ref: ServerProcess(root / "old", env={"PYTHONPATH": str(old_tree)}),
            }
            best: dict[tuple[str, str], float] = {}
            for server in servers.values():
                server.start()
                requests.put(f"{server.url}/data/projects/BENCH",
                             auth=(server.user, server.password)).raise_for_status()
            try:
                for n in range(args.rounds):
                    for name, server in servers.items():
                        for what, seconds in (("upload", upload_files(server, str(n), blobs)),
                                              ("import", import_zip(server, str(n), body))):
                            best[name, what] = min(best.get((name, what), seconds), seconds)
            finally:
                for server in servers.values():
                    server.stop()
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old_tree)], check=False, capture_output=True)
    mb = args.files * args.kb / 1000
    print(f"upload: {args.files} PUTs of {args.kb} kB; import: a zip of {args.slices} slices; "
          f"best of {args.rounds}")
    for what, amount, unit in (("upload", mb, "MB"), ("import", args.slices, "files")):
        new, old = best["journal", what], best[args.ref, what]
        print(f"{what}: journal {new:6.2f} s ({amount / new:7.1f} {unit}/s)  {args.ref} "
              f"{old:6.2f} s ({amount / old:7.1f} {unit}/s)  ratio {new / old:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
