"""A test hook: kill the server at a named point of a write, to prove crash recovery.

`XNAT_ML_FAULT=<operation>.<stage>` (e.g. `upload.committed`) makes the server SIGKILL itself
when a write reaches that point, exactly as a power cut or OOM kill would stop it. Operations:
upload, extract, import, roi, undo (of a failed job's writes); stages, in order: staged (bytes in
staging, nothing committed), committed (catalogue and journal committed, nothing published),
publishing (first file renamed into the archive), published (all renamed, journal entries not yet
marked done). Unset, it does nothing; it exists only for tests/server/test_journal_faults.py and
tests/containers/test_job_writes.py.
"""

from __future__ import annotations

import os
import signal

STAGES = ("staged", "committed", "publishing", "published")


def reached(operation: str, stage: str) -> None:
    """Die here if XNAT_ML_FAULT names this point."""
    if os.environ.get("XNAT_ML_FAULT") == f"{operation}.{stage}":
        os.kill(os.getpid(), signal.SIGKILL)
