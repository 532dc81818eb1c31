"""A test hook: kill the server at a named point, to prove that crash recovery holds there.

`XNAT_ML_FAULT=NAME[,NAME...]` in the server's environment makes it SIGKILL itself when it reaches
a named point, as a power cut or an OOM kill would stop it (no clean-up, nothing flushed), and the
test restarts it to check that nothing committed before the point is lost. Unset, a fault point
costs one lookup. For tests only (test_journal_faults, test_delete_faults, test_durable_events,
test_job_writes, test_requeue).

Points:
- `<operation>.<stage>` of the archive's write protocol (journal.py): operation upload, extract,
  import, roi or undo (of a failed job's writes); stage, in order, `staged` (bytes in staging,
  nothing committed), `committed` (catalogue and journal committed, nothing published),
  `publishing` (first file renamed into the archive), `published` (all renamed, journal entries
  not yet marked done).
- `delete.hidden`, `delete.committed`: a whole-object DELETE with its folders moved into trash/,
  before and after the catalogue commit (store/trash.py).
- `event-stored`: an archive change and its Event Service outbox row committed, nothing dispatched.
- `job-created`: a launch's `Created` job committed, no worker started.
- `job-started`: a job's process launched on its backend and its `Running` status committed.
- `job-outputs.finalizing`: a job exited 0 and its `Finalizing` status committed, no output
  uploaded yet (what the command uploaded itself is in).
- `job-outputs.uploading`: an output handler's upload committed, the job's end not yet recorded
  (reached after each handler's upload: the middle of the job's output handling).
The `job-*` points are reached in the Container Service (containers/service.py), which gets
`fault_point` passed in: containers/ does not import the server.
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
