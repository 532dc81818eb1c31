"""A test hook: kill the server at a named point, to prove that crash recovery holds there.

`XNAT_ML_FAULT=NAME[,NAME...]` in the server's environment makes it SIGKILL itself when it reaches
a named point, as a power cut or an OOM kill would stop it (no clean-up, nothing flushed), and the
test restarts it to check that nothing committed before the point is lost. Unset, a fault point
costs one lookup. For tests only (test_journal_faults, test_durable_events, test_job_writes).

Points:
- `<operation>.<stage>` of the archive's write protocol (journal.py): operation upload, extract,
  import, roi or undo (of a failed job's writes); stage, in order, `staged` (bytes in staging,
  nothing committed), `committed` (catalogue and journal committed, nothing published),
  `publishing` (first file renamed into the archive), `published` (all renamed, journal entries
  not yet marked done).
- `event-stored`: an archive change and its Event Service outbox row committed, nothing dispatched.
- `job-created`: a launch's `Created` job committed, no worker started.
"""

from __future__ import annotations

import os
import signal

ENV = "XNAT_ML_FAULT"
STAGES = ("staged", "committed", "publishing", "published")


def fault_point(name: str) -> None:
    """Die here if `name` is among the comma-separated names in XNAT_ML_FAULT."""
    wanted = os.environ.get(ENV)
    if wanted and name in (part.strip() for part in wanted.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)


def reached(operation: str, stage: str) -> None:
    """A stage of the write protocol: the point `<operation>.<stage>`."""
    fault_point(f"{operation}.{stage}")
