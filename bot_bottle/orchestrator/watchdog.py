"""The watchdog: finds runs that are starting, running or resuming without progress for
`FORGE_WATCHDOG_TIMEOUT` seconds and hands each to a callback (the orchestrator, which decides
`WatchdogExpired`: a running one is stopped and frozen as `timed_out`, one that never got
going is frozen or failed; a comment says which). Stepped with `tick(now)`; `run(stop_event, interval)` loops.
"""

from __future__ import annotations

import logging
from typing import Callable

from bot_bottle.orchestrator.model import WORKING_STATES, RunRecord

log = logging.getLogger(__name__)
# a run may hang before its agent runs (starting, resuming) as well as while it runs
WATCHED = WORKING_STATES


class Watchdog:
    def __init__(self, store, on_expired: Callable[[RunRecord, float], None], timeout: float,
                 clock: Callable[[], float]) -> None:
        self._store = store
        self._on_expired = on_expired
        self._timeout = timeout
        self._clock = clock

    def tick(self, now: float) -> list[int]:
        """One pass; returns the ids of the runs found idle."""
        expired = []
        for run in self._store.list_runs(states=WATCHED):
            last = run.last_progress_at if run.last_progress_at is not None else run.updated_at
            idle = now - last
            if idle >= self._timeout:
                log.warning("watchdog: no progress for %.0f s repo=%s issue=%s run=%s",
                            idle, run.repo_full_name, run.issue_number, run.id)
                expired.append(run.id)
                self._on_expired(run, idle)
        return expired

    def run(self, stop_event, interval: float = 30.0, beat: Callable[[], None] = lambda: None) -> None:
        """Passes every `interval` s until `stop_event`; `beat()` after each (a heartbeat)."""
        while not stop_event.wait(interval):
            try:
                self.tick(self._clock())
            except Exception:  # one bad pass must not stop the watchdog
                log.exception("watchdog pass failed")
            beat()
