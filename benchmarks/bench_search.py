"""A search with two criteria over 10,000 sessions, against the embedded server on loopback.

    .venv/bin/python benchmarks/bench_search.py [--sessions 10000] [--subjects 1000]

Seeds the sessions in bulk straight into a fresh data directory's store (one transaction, not
one REST call each), starts `xnat-ml serve` on it, then times `POST /data/search` (project =
BENCH and date >= a cut-off, the way pyxnat's `where()` sends it) and, for scale in the same
run, the plain listing of the same sessions that the client would filter itself
(`GET /data/experiments?project=BENCH&xsiType=...`). Target: the search in <= 0.5 s.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from pyxnat.core.search import build_search_document

from xnat_ml.server.app import create_app
from xnat_ml.server.process import ServerProcess
from xnat_ml.server.store.db import session_factory
from xnat_ml.server.store.models import Experiment, Project, ProjectRole, Subject, User
from xnat_ml.xnat import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_listing import median_time  # noqa: E402

TARGET_S = 0.5
CUT_OFF = "2024-07-01"


def seed(data_dir: Path, sessions: int, subjects: int) -> float:
    """Create project BENCH with `subjects` subjects and `sessions` MR sessions (dates spread
    over 2024) in the store itself; returns the seconds it took."""
    started = time.perf_counter()
    app = create_app(data_dir, admin_password="admin")
    with session_factory(app)() as db:
        admin = db.query(User).filter_by(username="admin").one()
        project = Project(id="BENCH", name="BENCH", secondary_id="BENCH", insert_user="admin")
        db.add(project)
        db.flush()
        db.add(ProjectRole(user_pk=admin.pk, project_pk=project.pk, role="Owner"))
        people = [
            Subject(id=f"BENCH_S{s:05d}", project_pk=project.pk, label=f"S{s:05d}", fields={})
            for s in range(subjects)
        ]
        db.add_all(people)
        db.flush()
        first = date(2024, 1, 1)
        db.add_all(
            Experiment(
                id=f"BENCH_E{e:05d}", project_pk=project.pk, subject_pk=people[e % subjects].pk,
                label=f"MR{e:05d}", xsi_type="xnat:mrSessionData", modality="MR",
                date=(first + timedelta(days=e % 366)).isoformat(), fields={},
            )  # fmt: skip
            for e in range(sessions)
        )
        db.commit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--subjects", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    document = build_search_document(
        "xnat:mrSessionData",
        ["xnat:mrSessionData/SESSION_ID", "xnat:mrSessionData/LABEL", "xnat:mrSessionData/DATE",
         "xnat:mrSessionData/SUBJECT_LABEL"],
        [("xnat:mrSessionData/PROJECT", "=", "BENCH"),
         ("xnat:mrSessionData/DATE", ">=", CUT_OFF), "AND"],
    )  # fmt: skip
    columns = "ID,label,date,subject_label"
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        seeded_s = seed(Path(tmp), args.sessions, args.subjects)
        with ServerProcess(tmp) as server, connect(server.url, "admin", "admin") as session:

            def search() -> list[dict]:
                text = session.post("/data/search", query={"format": "csv"}, data=document).text
                return list(csv.DictReader(io.StringIO(text)))

            def listing() -> list[dict]:
                query = {"project": "BENCH", "xsiType": "xnat:mrSessionData", "columns": columns}
                return session.get_json("/data/experiments", query=query)["ResultSet"]["Result"]

            found, listed = search(), listing()
            search_s = median_time(search, args.repeat)
            listing_s = median_time(listing, args.repeat)
    expected = sum(1 for row in listed if row["date"] >= CUT_OFF)
    verdict = "PASS" if search_s <= TARGET_S and len(found) == expected else "FAIL"
    print(f"seeded {args.sessions} sessions under {args.subjects} subjects into the store "
          f"in {seeded_s:.1f} s")  # fmt: skip
    print(f"search, 2 criteria (project, date >= {CUT_OFF}), {len(found)} rows: "
          f"{search_s * 1000:.0f} ms (median of {args.repeat}); "
          f"target <= {TARGET_S * 1000:.0f} ms: {verdict}")  # fmt: skip
    print(f"plain listing of all {len(listed)} sessions, same columns: "
          f"{listing_s * 1000:.0f} ms = {listing_s / search_s:.1f} x the search")  # fmt: skip
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
