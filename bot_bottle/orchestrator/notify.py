"""systemd `sd_notify` without libsystemd: one datagram to `$NOTIFY_SOCKET` (the path is passed
in by `__main__`; a leading '@' means an abstract socket). A missing socket is a no-op.
Also the watchdog round (`keepalive`): the service loops' `Heartbeats`, and the `STATUS=`
line with the run counts sent with each ping."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._address = address or None

    def notify(self, message: str) -> bool:
        if self._address is None:
            return False
        addr = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), addr)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", message.split("=")[0], exc)
            return False
        return True


class Heartbeats:
    """Each service loop `beat`s once per pass; a loop is stalled when its last beat is older
    than its `period` (the longest it waits between passes) plus a grace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._guard = threading.Lock()
        self._loops: dict[str, tuple[float, float]] = {}  # name -> (period, last beat)
        self._counts: dict[str, int] = {}

    def expect(self, name: str, period: float) -> None:
        """`name` is watched from now on: it must beat within `period` (plus the grace)."""
        with self._guard:
            self._loops[name] = (period, self._clock())
            self._counts[name] = 0

    def beat(self, name: str) -> None:
        with self._guard:
            period, _ = self._loops.get(name, (0.0, 0.0))
            self._loops[name] = (period, self._clock())
            self._counts[name] = self._counts.get(name, 0) + 1

    def beats(self, name: str) -> int:
        """How many times `name` has beaten."""
        with self._guard:
            return self._counts.get(name, 0)

    def stalled(self, grace: float) -> list[str]:
        now = self._clock()
        with self._guard:
            return [name for name, (period, last) in self._loops.items()
                    if now - last > period + grace]


def status_line(counts: dict[str, int]) -> str:
    """What `systemctl status` shows: starting and resuming runs count as running, timed-out
    ones as frozen (both hold a bottle waiting for a comment)."""
    running = sum(counts.get(s, 0) for s in ("starting", "running", "resuming"))
    frozen = counts.get("frozen", 0) + counts.get("timed_out", 0)
    return f"{running} running, {frozen} frozen, {counts.get('queued', 0)} queued"


def keepalive(notifier: Notifier, store, heartbeats: Heartbeats, *, grace: float) -> bool:
    """One watchdog round: `WATCHDOG=1` with the status only while the store answers and no
    loop is stalled (so a hung dispatcher gets the service restarted); else the status says
    why and the ping is withheld. Returns whether the service is healthy."""
    try:
        counts = store.count_runs_by_state()
    except Exception as exc:  # a closed or broken database
        log.error("watchdog ping withheld: the database does not answer (%s)", exc)
        notifier.notify("STATUS=the database does not answer")
        return False
    stalled = heartbeats.stalled(grace)
    if stalled:
        log.error("watchdog ping withheld: no progress in %s", ", ".join(stalled))
        notifier.notify(f"STATUS=stalled: {', '.join(stalled)}; {status_line(counts)}")
        return False
    notifier.notify(f"WATCHDOG=1\nSTATUS={status_line(counts)}")
    return True
