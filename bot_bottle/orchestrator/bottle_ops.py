"""The bounded worker pool for bottle operations (freeze, destroy, a PR's opening: the actions
in `lifecycle.BOTTLE_OPS`), so the dispatcher never waits on a `bot-bottle commit` or the
forge, and one run's trouble never holds up another's.

- At most `size` operations run at once (`BOT_BOTTLE_BOTTLE_WORKERS`), on threads from an
  injected `spawn` (one per busy worker; it ends when nothing is ready; tests pass a
  synchronous one).
- At most one operation per run is in flight; a run's later operations wait behind it in
  order, so a run whose commit hangs holds one worker (until the runner's own timeout ends
  the commit), never more, and the other runs' operations take the remaining workers.
- A failing operation is tried again after each of `delays` (default 5 s, then 30 s: three
  attempts); the wait holds no worker (a timer puts it back in line), though the run's later
  operations keep waiting behind it. An identical operation already waiting is not queued
  twice.
- How it ended goes to `on_done(run_id, event, settle)` as a lifecycle event (`OpSucceeded`,
  `OpFailed` with the last error), which the executor decides under the run's lock after
  calling `settle()` (from then on the operation no longer counts as under way).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from bot_bottle.orchestrator import lifecycle as L

log = logging.getLogger(__name__)
DEFAULT_DELAYS = (5.0, 30.0)


@dataclass(eq=False)
class _Op:
    action: object
    work: Callable[[], None]
    attempts: int = 0
    done: bool = False


class BottleOps:
    def __init__(self, *, size: int, spawn: Callable[[Callable[[], None]], None],
                 on_done: Callable[[int, object, Callable[[], None]], None],
                 delays: tuple[float, ...] = DEFAULT_DELAYS,
                 redact: Callable[[int, str], str] = lambda run_id, text: text) -> None:
        if size < 1:
            raise ValueError("the pool needs at least one worker")
        self._size = size
        self._spawn = spawn
        self._on_done = on_done
        self._delays = tuple(delays)
        self._redact = redact  # a failure's text, cleaned of secrets before any event sees it
        self._guard = threading.Lock()
        self._changed = threading.Condition(self._guard)  # notified when an operation ends
        self._queues: dict[int, deque[_Op]] = {}  # per run: the first in flight or backing off
        self._ready: deque[int] = deque()  # runs whose first operation may run now
        self._busy: set[int] = set()     # runs with an operation on a worker or backing off
        self._running: set[int] = set()  # runs with an operation on a worker
        self._workers = 0
        self._timers: set[threading.Timer] = set()
        self._closed = False

    # ---- what the executor asks ------------------------------------------------------------

    def submit(self, run_id: int, action, work: Callable[[], None]) -> None:
        with self._guard:
            if self._closed:
                log.warning("not running %s for run %s: shutting down", action, run_id)
                return
            queue = self._queues.setdefault(run_id, deque())
            if any(op.action == action and op.attempts == 0 for op in queue):
                return  # the same operation is waiting already: once is enough
            queue.append(_Op(action, work))
            if run_id not in self._busy and run_id not in self._ready:
                self._ready.append(run_id)
            start = self._claim_worker()
        if start:
            self._spawn(self._work)

    def under_way(self, run_id: int, kind: type) -> bool:
        """True while an operation of `kind` for the run waits, runs or backs off."""
        with self._guard:
            return any(isinstance(op.action, kind) and not op.done
                       for op in self._queues.get(run_id, ()))

    def idle(self) -> bool:
        """Nothing queued, running or backing off (tests wait for it)."""
        with self._guard:
            return self._idle()

    def _idle(self) -> bool:
        return not self._queues and self._workers == 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until `idle()`; whether it is."""
        with self._changed:
            return self._changed.wait_for(self._idle, timeout)

    def close(self) -> None:
        """Cancel the retries that wait (their runs' operations are dropped: a restart's
        reconcile decides on those runs again); operations running finish on their own
        (`wait_idle`)."""
        with self._guard:
            self._closed = True
            timers, self._timers = self._timers, set()
            for run_id in self._busy - self._running:  # backing off, on no worker
                self._busy.discard(run_id)
                self._queues.pop(run_id, None)
            self._changed.notify_all()
        for timer in timers:
            timer.cancel()

    # ---- the workers ----------------------------------------------------------------------

    def _claim_worker(self) -> bool:
        """Called under the guard: take a worker slot when work is ready and one is free."""
        if self._ready and self._workers < self._size:
            self._workers += 1
            return True
        return False

    def _work(self) -> None:
        while True:
            with self._guard:
                if not self._ready:
                    self._workers -= 1
                    self._changed.notify_all()
                    return
                run_id = self._ready.popleft()
                op = self._queues[run_id][0]
                self._busy.add(run_id)
                self._running.add(run_id)
            op.attempts += 1
            try:
                op.work()
            except Exception as exc:  # whatever it was, the run's story must go on
                reason = self._redact(run_id, str(exc) or type(exc).__name__)
                if op.attempts <= len(self._delays):
                    delay = self._delays[op.attempts - 1]
                    log.warning("run %s: %s failed (attempt %s), retried in %.0f s: %s", run_id,
                                type(op.action).__name__, op.attempts, delay, reason)
                    with self._guard:
                        self._running.discard(run_id)
                    self._retry_later(run_id, delay)
                    continue
                log.error("run %s: %s failed %s times: %s", run_id, type(op.action).__name__,
                          op.attempts, reason)
                event = L.OpFailed(op.action, reason, op.attempts)
            else:
                event = L.OpSucceeded(op.action)
            self._finish(run_id, op, event)

    def _retry_later(self, run_id: int, delay: float) -> None:
        if delay <= 0:
            self._requeue(run_id)
            return
        timer = threading.Timer(delay, self._requeue, (run_id,))
        timer.daemon = True
        with self._guard:
            if self._closed:  # shutting down: the retry is dropped
                self._busy.discard(run_id)
                self._queues.pop(run_id, None)
                self._changed.notify_all()
                return
            self._timers.add(timer)
        timer.start()

    def _requeue(self, run_id: int) -> None:
        with self._guard:
            self._timers = {t for t in self._timers if t.is_alive()
                            and t is not threading.current_thread()}
            if run_id not in self._queues:  # dropped by `close`
                return
            self._busy.discard(run_id)
            self._ready.append(run_id)
            start = self._claim_worker()
        if start:
            self._spawn(self._work)

    def _finish(self, run_id: int, op: _Op, event) -> None:
        def settle() -> None:
            with self._guard:
                if not op.done:
                    op.done = True
                    self._queues[run_id].remove(op)  # still there: the run is on a worker
        try:
            self._on_done(run_id, event, settle)
        except Exception:  # a store failure: the operation itself is over either way
            log.exception("run %s: could not decide on the end of %s", run_id, op.action)
        settle()
        with self._guard:
            self._running.discard(run_id)
            self._busy.discard(run_id)
            if self._queues.get(run_id):
                self._ready.append(run_id)
            else:
                self._queues.pop(run_id, None)
            self._changed.notify_all()
