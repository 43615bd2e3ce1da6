"""The done-signal relay: drains `FORGE_QUEUE_DIR` in name order into the store's
`done_events` (one transaction per file, advancing the `done` relay cursor), deletes each file
after it is recorded, and wakes the orchestrator. Restart-safe: a file recorded but not yet
deleted is a duplicate source and is only deleted.

`tick` is called by the relay's own loop and by bottle workers (a worker relays what its
agent signalled before it decides on the agent's exit); a lock makes the passes take turns,
so no file is read by one pass while another deletes it.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)
CURSOR = "done"


class Relay:
    def __init__(self, store, queue_dir: Path, wake: Callable[[], None],
                 clock: Callable[[], float]) -> None:
        self._store = store
        self._dir = Path(queue_dir)
        self._wake = wake
        self._clock = clock
        self._lock = threading.Lock()

    def tick(self) -> int:
        """One pass; returns how many new done events were recorded."""
        with self._lock:
            recorded = self._drain()
        if recorded:
            self._wake()
        return recorded

    def _drain(self) -> int:
        if not self._dir.is_dir():
            return 0
        recorded = 0
        for path in sorted(p for p in self._dir.iterdir()
                           if p.suffix == ".json" and not p.name.startswith(".")):
            try:
                data = json.loads(path.read_bytes())
                run_id, status, summary = int(data["run_id"]), str(data["status"]), str(data["summary"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("relay: dropping unreadable done file %s: %s", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            if self._store.record_done_event(path.name, run_id, status, summary, self._clock(),
                                             CURSOR, path.name):
                recorded += 1
            path.unlink()
        return recorded

    def run(self, stop_event, interval: float = 0.5, beat: Callable[[], None] = lambda: None) -> None:
        """Passes every `interval` s until `stop_event`; `beat()` after each (a heartbeat)."""
        while not stop_event.wait(interval):
            try:
                self.tick()
            except Exception:  # keep relaying; the next pass retries
                log.exception("relay pass failed")
            beat()
