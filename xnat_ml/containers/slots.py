"""How many jobs of one backend run at once: the rest wait their turn, in launch order.

A backend that queues by itself (Slurm) or that the site sizes (Docker) has no limit. The local
backend runs jobs as processes on the server's own machine, where a batch of fifty would otherwise
start fifty interpreters at once and run the host out of memory. A waiting job stays `Created`:
nothing of it is staged, so waiting costs nothing but its place in line.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class Slots:
    """At most `limit` holders (None: no limit). `take` grants a slot now or queues the job;
    when a slot is freed, `start(job id)` is called for the next job in line, which then holds
    it (its `take` answers True)."""

    def __init__(self, limit: int | None, start: Callable[[int], None]) -> None:
        self.limit = limit
        self._start = start
        self._lock = threading.Lock()
        self._holders: set[int] = set()
        self._waiting: deque[int] = deque()

    def take(self, job_id: int) -> bool:
        with self._lock:
            if job_id in self._holders or self.limit is None:
                self._holders.add(job_id)
                return True
            if len(self._holders) < self.limit:
                self._holders.add(job_id)
                return True
            if job_id not in self._waiting:
                self._waiting.append(job_id)
            return False

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def release(self, job_id: int) -> None:
        """The job ended (or will never run): its slot, or its place in line, goes."""
        with self._lock:
            if job_id in self._waiting:
                self._waiting.remove(job_id)
                return
            if job_id not in self._holders:
                return
            self._holders.discard(job_id)
            if not self._waiting or self.limit is None:
                return
            following = self._waiting.popleft()
            self._holders.add(following)
        self._start(following)
