"""The store's writer thread and its group commit: callers `submit` a job (a function run
inside a write transaction), one thread runs everything queued in one transaction, commits
once — one fsync for many jobs — and wakes each caller with its own answer, durable then.
`submit_async` is the same without waiting: the answer goes to a callback, called on the
writer thread once the group is committed (the webhook port's event loop acks that way, so
its one thread never blocks on an fsync). `submit_lazy` defers a write that may be lost in a
crash until the next group commits anyway (at most `LAZY_DELAY` later): the dispatcher's marks
of deliveries that changed nothing cost no fsync of their own.
Deliveries are recorded and marked processed through it, so the dispatcher's marking never
waits for the writer lock behind the receiver's inserts: it rides in the same commit.

When its queue is empty the thread does the owner's idle work (`idle`: pruning old
deliveries), one small step at a time, and looks at the queue again between steps.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Callable, TypeVar

from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_rows import StoreError

log = logging.getLogger("bot_bottle.orchestrator.store")
LAZY_DELAY = 0.05  # the most a deferred write waits for a group to ride with
T = TypeVar("T")


def _is_busy(exc: BaseException | None) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


Callback = Callable[[object, "BaseException | None"], None]


class _Job:
    """One caller's write waiting for the writer thread: a waiting caller's `done` event, or
    an asynchronous caller's `callback(result, error)`."""

    __slots__ = ("apply", "done", "callback", "result", "error")

    def __init__(self, apply: Callable[[sqlite3.Connection], object],
                 callback: Callback | None = None) -> None:
        self.apply = apply
        self.callback = callback
        self.done = threading.Event() if callback is None else None
        self.result: object = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        """Hand the answer over: wake the caller, or call its callback (on the writer thread;
        a callback that raises is logged, never stops the writer)."""
        if self.done is not None:
            self.done.set()
            return
        callback, self.callback = self.callback, None
        if callback is None:  # already answered
            return
        try:
            callback(self.result, self.error)
        except Exception:
            log.exception("store: a write's callback failed")

    def answered(self) -> bool:
        return self.done.is_set() if self.done is not None else self.callback is None


class GroupWriter:
    def __init__(self, db: StoreDb, idle: Callable[[], float | None] | None = None) -> None:
        """`idle()` is called on the writer thread whenever the queue is empty; it does one
        small step of work and returns the seconds until it wants to be called again (None:
        not before the next job)."""
        self._db = db
        self._idle = idle
        self._queue: list[_Job] = []
        self._lazy: list[_Job] = []  # `submit_lazy`: ride the next group, or go at `_lazy_due`
        self._lazy_due: float | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, apply: Callable[[sqlite3.Connection], T]) -> T:
        """Run `apply(conn)` in the next group's transaction; return its result once that is
        committed. A StoreError (its own, or the transaction's) is raised to this caller only."""
        job = _Job(apply)
        self._enqueue(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def submit_async(self, apply: Callable[[sqlite3.Connection], T],
                     callback: Callable[[T | None, BaseException | None], None]) -> None:
        """Run `apply(conn)` in the next group's transaction and return at once; once that is
        committed (durable) the writer thread calls `callback(result, None)`, or
        `callback(None, error)` if it failed (a StoreError). The callback must be quick: the
        next group waits for it. A closed writer raises StoreError here, with no callback."""
        self._enqueue(_Job(apply, callback))  # type: ignore[arg-type]

    def submit_lazy(self, apply: Callable[[sqlite3.Connection], object],
                    committed: Callable[[], None] | None = None) -> None:
        """Run `apply(conn)` with the next group that commits anyway, or on its own after at
        most `LAZY_DELAY` s; return at once. For writes that may be lost in a crash (marking a
        delivery that changed nothing: the next process handles it again, the same way), so
        they cost no fsync of their own. A failure is logged; `committed()` is called on the
        writer thread once it is durable."""
        def logged(result: object, error: BaseException | None) -> None:
            if error is not None:
                log.error("store: a deferred write failed: %s", error)
            elif committed is not None:
                committed()
        with self._cond:
            if self._closing:
                raise StoreError("store is closed")
            self._lazy.append(_Job(apply, logged))
            if self._lazy_due is None:
                self._lazy_due = time.monotonic() + LAZY_DELAY
                self._cond.notify()  # the writer's wait now has a deadline

    def _enqueue(self, job: _Job) -> None:
        with self._cond:
            if self._closing:
                raise StoreError("store is closed")
            self._queue.append(job)
            self._cond.notify()

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
                    self._cond.wait(self._until_lazy(wait))
                lazy_due = self._lazy_due is not None and (
                    self._closing or time.monotonic() >= self._lazy_due)
                if not self._queue and self._closing and not self._lazy:  # all written
                    return
                batch, self._queue = self._queue, []
                if batch or lazy_due:
                    batch, self._lazy, self._lazy_due = self._lazy + batch, [], None
            if batch:
                try:
                    self._run(batch)
                except Exception:  # a bug here must not stop the writer; callers get an error
                    log.exception("store: write batch failed")
                finally:
                    for job in batch:
                        if not job.answered():
                            job.error = StoreError("write was not done")
                            job.finish()
            if not self.waiting():
                wait = self._idle_step()

    def _until_lazy(self, wait: float | None) -> float | None:
        """The writer's wait, cut short when a deferred write falls due."""
        if self._lazy_due is None:
            return wait
        due = max(0.0, self._lazy_due - time.monotonic())
        return due if wait is None else min(wait, due)

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
                job.finish()
            return
        for job, result in zip(batch, results):
            job.result = result
            job.finish()
