"""Event Service cost on the embedded server: does dispatch slow down the requests that raise
events, and how fast are matching subscriptions delivered?

    .venv/bin/python benchmarks/bench_event_dispatch.py [--sessions 50]

1. Overhead on requests: creates SESSIONS sessions with plain REST PUTs, alternating between a
   project without subscriptions (reference) and one with three SessionEvent subscriptions whose
   payload filters do not match (each event is matched three times and leaves three history
   rows); alternating keeps both under the same machine load. Prints the median latencies and
   their ratio (target <= 1.3: events are queued, never handled inside the request).
2. Delivery: SESSIONS more sessions in a project with two launching subscriptions; prints the
   time until all 2 x SESSIONS launches are recorded, and launches per second (each launch is an
   alias token and a launch request; the trivial jobs run meanwhile on the local backend).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import requests

from xnat_ml.server.process import ServerProcess

TARGET_RATIO = 1.3
ECHO = {
    "name": "bench-echo", "version": "1", "schema-version": "1.0", "type": "docker",
    "image": "busybox:latest", "command-line": "echo #LABEL#",
    "inputs": [{"name": "LABEL", "type": "string", "required": True}],
    "xnat": [{
        "name": "bench-echo", "contexts": ["xnat:imageSessionData"],
        "external-inputs": [{"name": "session", "type": "Session", "required": True}],
        "derived-inputs": [{
            "name": "label", "type": "string", "derived-from-wrapper-input": "session",
            "derived-from-xnat-object-property": "label",
            "provides-value-for-command-input": "LABEL",
        }],
        "output-handlers": [],
    }],
}  # fmt: skip


def put_session(http: requests.Session, url: str, project: str, label: str) -> float:
    started = time.perf_counter()
    http.put(f"{url}/data/projects/{project}/subjects/S1/experiments/{label}",
             params={"xsiType": "xnat:mrSessionData"}).raise_for_status()  # fmt: skip
    return time.perf_counter() - started


def new_project(http: requests.Session, url: str, project: str) -> None:
    http.put(f"{url}/data/projects/{project}").raise_for_status()
    http.put(f"{url}/data/projects/{project}/subjects/S1").raise_for_status()


def subscribe(http: requests.Session, url: str, project: str, wrapper: int, filters) -> None:
    action = f"org.nrg.containers.services.CommandActionProvider:{wrapper}"
    for i, predicate in enumerate(filters):
        http.post(f"{url}/xapi/projects/{project}/events/subscription", json={
            "name": f"{project} {i}", "action-key": action,
            "event-filter": {"event-type": "SessionEvent", "payload-filter": predicate},
        }).raise_for_status()  # fmt: skip


def wait_deliveries(http: requests.Session, url: str, project: str, wanted: int) -> None:
    deadline = time.perf_counter() + 600
    while (
        int(http.get(f"{url}/xapi/events/delivered/count", params={"project": project}).json())
        < wanted
    ):
        if time.perf_counter() > deadline:
            raise SystemExit(f"fewer than {wanted} deliveries in {project} after 600 s")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    n = args.sessions
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(tmp) as server:
        url = server.url
        http = requests.Session()
        http.auth = ("admin", "admin")
        http.post(f"{url}/xapi/commands", json=ECHO).raise_for_status()
        wrapper = http.get(f"{url}/xapi/commands").json()[0]["xnat"][0]["id"]
        http.put(f"{url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
        for project in ("REF", "FILT", "RUN"):
            new_project(http, url, project)
            http.put(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/enabled").raise_for_status()
        subscribe(
            http, url, "FILT", wrapper, ["@.label == 'a'", "@.label == 'b'", "@.label == 'c'"]
        )
        subscribe(http, url, "RUN", wrapper, ["@.label =~ /RUN.*/", "'x' nin @.resources[*].label"])

        reference, filtered = [], []
        for i in range(n):
            reference.append(put_session(http, url, "REF", f"REF_{i:04d}"))
            filtered.append(put_session(http, url, "FILT", f"FILT_{i:04d}"))
        ratio = statistics.median(filtered) / statistics.median(reference)

        started = time.perf_counter()
        for i in range(n):
            put_session(http, url, "RUN", f"RUN_{i:04d}")
        wait_deliveries(http, url, "RUN", 2 * n)
        delivered_s = time.perf_counter() - started
        refused = [d for d in http.get(f"{url}/xapi/events/delivered",
                                       params={"project": "RUN"}).json() if d["error"]]  # fmt: skip

    print(
        f"session creation, median of {n}: {statistics.median(reference) * 1000:.1f} ms in a "
        f"project without subscriptions, {statistics.median(filtered) * 1000:.1f} ms with 3 "
        f"(ratio {ratio:.2f}, target <= {TARGET_RATIO})"
    )
    print(
        f"{2 * n} launches delivered {delivered_s:.1f} s after the first creation "
        f"({2 * n / delivered_s:.1f} launches/s), {len(refused)} refused"
    )
    return 0 if ratio <= TARGET_RATIO and not refused else 1


if __name__ == "__main__":
    raise SystemExit(main())
