"""One-call listing of 1,000 sessions with columns, against the embedded server on loopback.

    .venv/bin/python benchmarks/bench_listing.py [--sessions 1000] [--subjects 100]

Creates the sessions with plain REST PUTs, then times `list_experiments` (one
`GET /data/experiments?project=&xsiType=&columns=...`) several times. Target: <= 0.5 s. For
scale it prints, measured in the same run, the cost of a trivial request
(`/xapi/siteConfig/buildInfo`) and of fetching sessions one request each, as a client
walking the object tree would.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from xnat_ml.server.process import ServerProcess
from xnat_ml.xnat import connect, list_experiments
from xnat_ml.xnat.uris import project_uri

TARGET_S = 0.5
COLUMNS = ("ID", "label", "xsiType", "project", "subject_label", "date", "URI")


def median_time(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        with ServerProcess(tmp) as server, connect(server.url, "admin", "admin") as session:
            project = project_uri("BENCH")
            started = time.perf_counter()
            session.put(project)
            for s in range(args.subjects):
                session.put(f"{project}/subjects/S{s:04d}")
            for e in range(args.sessions):
                session.put(
                    f"{project}/subjects/S{e % args.subjects:04d}/experiments/MR{e:05d}",
                    query={"xsiType": "xnat:mrSessionData", "date": "2024-01-01"},
                )
            made_s = time.perf_counter() - started

            rows = list_experiments(session, "BENCH", "xnat:mrSessionData", COLUMNS)
            listing_s = median_time(
                lambda: list_experiments(session, "BENCH", "xnat:mrSessionData", COLUMNS),
                args.repeat,
            )
            trivial_s = median_time(lambda: session.get("/xapi/siteConfig/buildInfo"), args.repeat)
            sample = rows[:50]
            one_by_one_s = median_time(
                lambda: [session.get_json(row["URI"]) for row in sample], 3
            ) * (len(rows) / len(sample))
    rate = (args.sessions + args.subjects) / made_s
    verdict = "PASS" if listing_s <= TARGET_S else "FAIL"
    print(f"created {args.sessions} sessions under {args.subjects} subjects by REST PUT "
          f"in {made_s:.1f} s ({rate:.0f} objects/s)")  # fmt: skip
    print(f"one-call listing of {len(rows)} sessions, {len(COLUMNS)} columns: "
          f"{listing_s * 1000:.0f} ms (median of {args.repeat}); "
          f"target <= {TARGET_S * 1000:.0f} ms: {verdict}")  # fmt: skip
    print(f"  = {listing_s / trivial_s:.1f} x a trivial request ({trivial_s * 1000:.1f} ms)")
    print(f"  one request per session instead: {one_by_one_s:.2f} s (from 50) "
          f"= {one_by_one_s / listing_s:.0f} x slower")  # fmt: skip
    return 0 if len(rows) == args.sessions and listing_s <= TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
