"""A job's progress on its XNAT workflow entry: step and percentage, as XNAT users follow jobs.

XNAT's Container Service gives each job the id of the workflow it opened for it
(`XNAT_WORKFLOW_ID`); the job changes that entry with the call any XNAT accepts from the
workflow's creator (the launching user, whose alias token the job holds): `PUT
/data/workflows/{id}` with the query fields `wrk:workflowData/step_description` and
`wrk:workflowData/percentageComplete`.
Outside a job (no variable) reporting does nothing. Progress is for people to read: a refused or
failed update is logged and never stops the work.
"""

from __future__ import annotations

import logging
import os
import time

from xnat.session import XNATSession

log = logging.getLogger(__name__)

ENV = "XNAT_WORKFLOW_ID"
EVERY_S = 1.0  # at most one update a second; a final one always goes
FIELD = "wrk:workflowData/"


class WorkflowProgress:
    """Reports to the workflow named by $XNAT_WORKFLOW_ID (or `workflow_id`), if any."""

    def __init__(self, session: XNATSession, workflow_id: str | None = None) -> None:
        self.session = session
        self.workflow_id = (workflow_id or os.environ.get(ENV, "")).strip()
        self._last = 0.0
        self._sent: tuple[str, str] | None = None

    def report(self, step: str, percent: float | None = None, final: bool = False) -> None:
        """Set the workflow's step (and percentage, 0-100); throttled unless `final`."""
        if not self.workflow_id.isdigit():
            return
        shown = "" if percent is None else f"{min(max(percent, 0.0), 100.0):.0f}"
        if (step, shown) == self._sent or (not final and time.monotonic() - self._last < EVERY_S):
            return
        query = {f"{FIELD}step_description": step[:1000]}
        if shown:
            query[f"{FIELD}percentageComplete"] = shown
        try:
            self.session.put(f"/data/workflows/{self.workflow_id}", query=query,
                             accepted_status=[200, 201])  # fmt: skip
        except Exception as exc:  # progress is for people; the job goes on without it
            log.warning("workflow %s: progress not recorded (%s)", self.workflow_id, exc)
        self._last, self._sent = time.monotonic(), (step, shown)
