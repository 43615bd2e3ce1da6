"""The webhook port's few app threads (`http_loop`): a fixed number of daemon threads run
the functions submitted to them in turn (the app's synchronous routes: pages, `/runs`,
`/metrics`, `/healthz`), so a slow page never holds the event loop; `close` lets them finish
what is queued, waiting a bounded time.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

class Pool:
    """A few daemon threads running submitted functions (the app's slower routes)."""

    def __init__(self, size: int, name: str) -> None:
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._work, name=name, daemon=True)
                         for _ in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:  # a job's bug must not cost the pool a thread
                log.exception("an app thread's job failed")
