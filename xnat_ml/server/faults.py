"""Deterministic crash points for recovery tests: `XNAT_ML_FAULT=event-stored,job-created`.

A test sets the variable in the server's environment; the server then dies (exit status 137,
as after SIGKILL, with no clean-up) when it reaches a named point, and the test restarts it to
check that nothing committed before the point is lost. Unset, a fault point costs one lookup.

Points: `event-stored` (an archive change and its Event Service outbox row committed, nothing
dispatched yet), `job-created` (a launch's `Created` job committed, no worker started).
"""

from __future__ import annotations

import os

ENV = "XNAT_ML_FAULT"


def fault_point(name: str) -> None:
    """Exit the process at once if `name` is among the comma-separated names in XNAT_ML_FAULT."""
    wanted = os.environ.get(ENV)
    if wanted and name in (part.strip() for part in wanted.split(",")):
        os._exit(137)
