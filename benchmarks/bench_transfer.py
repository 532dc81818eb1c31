"""Upload and download of a 200 MB resource through the client, next to a plain file copy.

    .venv/bin/python benchmarks/bench_transfer.py [--mb 200] [--files 20]

Starts the embedded server on loopback, uploads a directory of FILES files totalling MB
megabytes with `upload_directory` (one zip PUT, extracted by the server), downloads it with
`download_resource` (streamed zip, extracted), checks the bytes, and prints MB/s for each next
to `shutil.copytree` of the same directory measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from xnat_ml.server.process import ServerProcess
from xnat_ml.xnat import connect, download_resource, upload_directory
from xnat_ml.xnat.uris import project_uri


def make_payload(folder: Path, megabytes: int, files: int) -> dict[str, str]:
    """Half random bytes, half smooth image-like values: neither best nor worst case for zip."""
    rng = np.random.default_rng(0)
    per_file = megabytes * 1_000_000 // files
    digests = {}
    for n in range(files):
        path = folder / f"part{n // 5}" / f"file{n:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        if n % 2:
            data = rng.bytes(per_file)
        else:
            ramp = np.cumsum(rng.integers(-3, 4, per_file // 2), dtype=np.int64)
            data = (ramp % 4096).astype("<u2").tobytes()
        path.write_bytes(data)
        digests[path.relative_to(folder).as_posix()] = hashlib.md5(data).hexdigest()
    return digests


def digests_of(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="payload size in MB (default 200)")
    parser.add_argument("--files", type=int, default=20, help="number of files (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        root = Path(tmp)
        payload = root / "payload"
        expected = make_payload(payload, args.mb, args.files)
        size_mb = sum(p.stat().st_size for p in payload.rglob("*") if p.is_file()) / 1e6
        copy_s = timed(lambda: shutil.copytree(payload, root / "copy"))
        server = ServerProcess(root / "server")
        with server, connect(server.url, server.user, server.password) as session:
            session.put(project_uri("BENCH"))
            parent = project_uri("BENCH")
            up_s = timed(lambda: upload_directory(session, parent, "PAYLOAD", payload))
            resource = f"{parent}/resources/PAYLOAD"
            down_s = timed(lambda: download_resource(session, resource, root / "download"))
        identical = digests_of(root / "download") == expected
    copy_rate = size_mb / copy_s
    print(f"payload: {size_mb:.0f} MB in {args.files} files (half random, half image-like)")
    print(f"plain copy (shutil.copytree): {copy_s:6.2f} s  {copy_rate:7.1f} MB/s")
    steps = (("upload   (upload_directory) ", up_s), ("download (download_resource)", down_s))
    for name, seconds in steps:
        rate = size_mb / seconds
        print(f"{name}: {seconds:6.2f} s  {rate:7.1f} MB/s  = {rate / copy_rate:.2f} x plain copy")
    print(f"downloaded bytes identical to the uploaded ones: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
