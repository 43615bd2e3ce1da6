"""The store's writer thread and its group commit: callers `submit` a job (a function run
inside a write transaction), one thread runs everything queued in one transaction, commits
once — one fsync for many jobs — and wakes each caller with its own answer, durable then.
Deliveries are recorded and marked processed through it, so the dispatcher's marking never
waits for the writer lock behind the receiver's inserts: it rides in the same commit.

When its queue is empty the thread does the owner's idle work (`idle`: pruning old
deliveries), one small step at a time, and looks at the queue again between steps.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Callable, TypeVar

from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_rows import StoreError

log = logging.getLogger("bot_bottle.orchestrator.store")
T = TypeVar("T")


def _is_busy(exc: BaseException | None) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Job:
    """One caller's write waiting for the writer thread."""

    __slots__ = ("apply", "done", "result", "error")

    def __init__(self, apply: Callable[[sqlite3.Connection], object]) -> None:
        self.apply = apply
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None


class GroupWriter:
    def __init__(self, db: StoreDb, idle: Callable[[], float | None] | None = None) -> None:
        """`idle()` is called on the writer thread whenever the queue is empty; it does one
        small step of work and returns the seconds until it wants to be called again (None:
        not before the next job)."""
        self._db = db
        self._idle = idle
        self._queue: list[_Job] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, apply: Callable[[sqlite3.Connection], T]) -> T:
        """Run `apply(conn)` in the next group's transaction; return its result once that is
        committed. A StoreError (its own, or the transaction's) is raised to this caller only."""
        job = _Job(apply)
        with self._cond:
            if self._closing:
                raise StoreError("store is closed")
            self._queue.append(job)
            self._cond.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def waiting(self) -> bool:
        """Whether jobs are queued (idle work stops for them)."""
        return bool(self._queue)

    def close(self) -> None:
        """Write what is queued and stop the thread. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        wait = self._idle_step()
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(wait)
                if not self._queue and self._closing:  # everything queued is written
                    return
                batch, self._queue = self._queue, []
            if batch:
                try:
                    self._run(batch)
                except Exception:  # a bug here must not stop the writer; callers get an error
                    log.exception("store: write batch failed")
                finally:
                    for job in batch:
                        if not job.done.is_set():
                            job.error = StoreError("write was not done")
                            job.done.set()
            if not self.waiting():
                wait = self._idle_step()

    def _idle_step(self) -> float | None:
        if self._idle is None:
            return None
        try:
            return self._idle()
        except Exception:  # idle work tries again later; the writer goes on
            log.exception("store: idle work failed")
            return 60.0

    def _run(self, batch: list[_Job]) -> None:
        try:
            with self._db.atomic() as conn:
                results = [job.apply(conn) for job in batch]
        except StoreError as exc:
            if len(batch) > 1 and not _is_busy(exc.__cause__):
                # one bad job (a row too big for the disk, an unknown seq) must not fail the
                # others: each is tried alone
                for job in batch:
                    self._run([job])
                return
            for job in batch:
                job.error = StoreError(str(exc))
                job.error.__cause__ = exc.__cause__
                job.done.set()
            return
        for job, result in zip(batch, results):
            job.result = result
            job.done.set()
