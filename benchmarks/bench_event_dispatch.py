"""Event Service cost on the embedded server: does dispatch slow down the requests that raise
events, and how fast are matching subscriptions delivered?

    .venv/bin/python benchmarks/bench_event_dispatch.py [--sessions 50]

Creates SESSIONS sessions with plain REST PUTs in a project without subscriptions (reference)
and in one with three active SessionEvent subscriptions (one launching a trivial command, one
payload-filter mismatch, one more launching); prints the median creation latency of each and
their ratio (target <= 1.3: events are queued, never handled inside the request), then the time
until every delivery is recorded and the deliveries per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import requests

from xnat_ml.demo import embedded_server

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


def create_sessions(http: requests.Session, url: str, project: str, count: int) -> list[float]:
    http.put(f"{url}/data/projects/{project}").raise_for_status()
    http.put(f"{url}/data/projects/{project}/subjects/S1").raise_for_status()
    times = []
    for i in range(count):
        started = time.perf_counter()
        http.put(f"{url}/data/projects/{project}/subjects/S1/experiments/{project}_{i:04d}",
                 params={"xsiType": "xnat:mrSessionData"}).raise_for_status()  # fmt: skip
        times.append(time.perf_counter() - started)
    return times


def subscribe(http: requests.Session, url: str, project: str, wrapper: int) -> None:
    action = f"org.nrg.containers.services.CommandActionProvider:{wrapper}"
    for name, predicate in (("launch", "@.label =~ /.*/"), ("mismatch", "@.label == 'none'"),
                            ("launch-too", "'x' nin @.resources[*].label")):  # fmt: skip
        http.post(f"{url}/xapi/projects/{project}/events/subscription", json={
            "name": f"{project} {name}", "action-key": action,
            "event-filter": {"event-type": "SessionEvent", "payload-filter": predicate},
        }).raise_for_status()  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, embedded_server(tmp) as url:
        http = requests.Session()
        http.auth = ("admin", "admin")
        http.post(f"{url}/xapi/commands", json=ECHO).raise_for_status()
        wrapper = http.get(f"{url}/xapi/commands").json()[0]["xnat"][0]["id"]

        reference = statistics.median(create_sessions(http, url, "REF", args.sessions))
        http.put(f"{url}/data/projects/EVT").raise_for_status()
        subscribe(http, url, "EVT", wrapper)
        started = time.perf_counter()
        with_events = statistics.median(create_sessions(http, url, "EVT", args.sessions))
        wanted = 2 * args.sessions  # two launching subscriptions per session
        while True:
            found = http.get(f"{url}/xapi/events/delivered/count", params={"project": "EVT"})
            if int(found.json()) >= wanted:
                break
            if time.perf_counter() - started > 600:
                print(f"only {found.json()} of {wanted} deliveries after 600 s")
                return 1
            time.sleep(0.1)
        delivered_s = time.perf_counter() - started
        errors = [d for d in http.get(f"{url}/xapi/events/delivered",
                                      params={"project": "EVT"}).json() if d["error"]]  # fmt: skip

    ratio = with_events / reference
    print(f"session creation, median of {args.sessions}: {reference * 1000:.1f} ms without "
          f"subscriptions, {with_events * 1000:.1f} ms with 3 (ratio {ratio:.2f}, "
          f"target <= {TARGET_RATIO})")
    print(f"{wanted} launches delivered {delivered_s:.1f} s after the first creation "
          f"({wanted / delivered_s:.1f} deliveries/s), {len(errors)} refused")
    return 0 if ratio <= TARGET_RATIO and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
