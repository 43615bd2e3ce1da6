"""The store's WAL checkpoints, kept off the commit path: no connection of the store
checkpoints on commit (`PRAGMA wal_autocheckpoint = 0`); instead one background thread, on
its own connection, copies committed pages into the database file (`PASSIVE`: it never
blocks a writer) a moment after commits, while writers go on appending to the WAL.

A `PASSIVE` checkpoint can never catch up with a writer that never pauses, and SQLite only
starts the WAL over from its beginning when everything in it has been copied, so when the
WAL has grown past its bound the thread repeats the checkpoint (each run shorter: it copies
only what was committed during the last) and does the last, short one holding the writer
lock: the next write then starts the WAL over, and `journal_size_limit` cuts the file back.
That bounds the WAL; a writer waits only for that short tail, never for a whole checkpoint.
Should the thread be starved of CPU all the same, the writer checkpoints after a commit that
leaves the WAL past twice its bound (`StoreDb`), so the bound holds whatever the scheduling.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Callable

log = logging.getLogger("bot_bottle.orchestrator.store")

# How long the thread lets commits gather before the next checkpoint: a page written again
# and again (an index's last page, the tally) is then copied once, not once per commit.
# Shorter when commits come fast, so the WAL grows by at most half its bound meanwhile.
INTERVAL = 0.05
# Frames left to copy when the short tail is done under the writer lock.
_TAIL = 64


class Checkpointer:
    def __init__(self, connect: Callable[[], sqlite3.Connection], writer_lock: threading.Lock,
                 max_frames: int) -> None:
        """`connect()` opens the thread's connection; `writer_lock` is held by every write
        transaction of the store; past `max_frames` in the WAL it is started over."""
        self._connect = connect
        self._writer_lock = writer_lock
        self._max_frames = max_frames
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.checkpoints = 0  # completed checkpoint runs (for tests)
        self._last = (0, 0.0)  # (frames in the WAL, time.monotonic()) at the last checkpoint
        self._thread = threading.Thread(target=self._loop, name="store-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A transaction was committed (called by the writer, cheap)."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                pause = INTERVAL
                try:
                    if conn is None:
                        conn = self._connect()
                    pause = self._pause(*self._checkpoint(conn))
                except Exception:  # a failed checkpoint is tried again after the next commit
                    log.exception("store: WAL checkpoint failed")
                if self._stop.wait(pause):
                    return
        finally:
            if conn is not None:
                conn.close()

    def _passive(self, conn: sqlite3.Connection) -> tuple[int, int]:
        _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return frames, copied

    def _pause(self, frames: int, restarted: bool) -> float:
        """Until the next checkpoint: INTERVAL, or less if at the rate the WAL grew since the
        last one it would grow by more than half its bound meanwhile."""
        last_frames, last_at = self._last
        now = time.monotonic()
        self._last = (0 if restarted else frames, now)
        grown = frames - last_frames if frames >= last_frames else frames  # or it started over
        if grown <= 0 or now <= last_at:
            return INTERVAL
        return min(INTERVAL, self._max_frames / 2 / (grown / (now - last_at)))

    def _checkpoint(self, conn: sqlite3.Connection) -> tuple[int, bool]:
        """One checkpoint; returns the frames the WAL had and whether it starts over now."""
        frames, copied = seen, _ = self._passive(conn)
        if frames <= self._max_frames:
            return seen, False
        for _ in range(3):  # each run copies what came during the one before: shorter each time
            if frames - copied <= _TAIL:
                break
            frames, copied = self._passive(conn)
        with self._writer_lock:  # the tail: then the next write starts the WAL over
            self._passive(conn)
        return seen, True
