"""The service's own measurements for `/metrics` that no table holds: webhook answers by code
and their ack latency, run durations at each terminal transition, forge errors by kind, and
the process's start time and resident memory; each renders itself as Prometheus text.

Everything here is in memory and thread-safe; counters start at zero when the process starts
(Prometheus sees the reset through `process_start_time_seconds`). Label values are fixed
sets chosen here (HTTP codes, run states, error kinds), never text from outside.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Iterable

from bot_bottle.contrib.forge.base import (
    ForgeAuthError, ForgeError, ForgeNotFound, ForgeScopeError, ForgeUnavailable,
    ForgeValidationError)

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
                    259200.0, 604800.0)
TERMINAL = ("failed", "timed_out", "destroyed")
_KINDS = ((ForgeNotFound, "not_found"), (ForgeAuthError, "auth"),
          (ForgeUnavailable, "unavailable"), (ForgeValidationError, "validation"),
          (ForgeScopeError, "scope"))


def number(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    return repr(value)


class Histogram:
    """Cumulative buckets per label value (one label, `label`), `_sum` and `_count`."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...],
                 label: str | None = None, values: Iterable[str] = ()) -> None:
        self.name, self.help, self.buckets, self.label = name, help_text, buckets, label
        self._lock = threading.Lock()
        self._series: dict[str, list] = {}
        for value in values:  # series that must exist from the start (no vanishing series)
            self._get(value)

    def _get(self, value: str) -> list:
        series = self._series.get(value)
        if series is None:  # per-bucket counts (not cumulative), sum, count
            series = self._series[value] = [[0] * len(self.buckets), 0.0, 0]
        return series

    def observe(self, seconds: float, value: str = "") -> None:
        seconds = max(0.0, float(seconds))
        at = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            series = self._get(value)
            if at < len(self.buckets):
                series[0][at] += 1
            series[1] += seconds
            series[2] += 1

    def text(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            snapshot = sorted((k, list(v[0]), v[1], v[2]) for k, v in self._series.items())
        for value, counts, total, count in snapshot:
            labels = f'{self.label}="{value}",' if self.label else ""
            running = 0
            for bound, n in zip(self.buckets, counts):
                running += n
                lines.append(f'{self.name}_bucket{{{labels}le="{number(bound)}"}} {running}')
            lines.append(f'{self.name}_bucket{{{labels}le="+Inf"}} {count}')
            tail = f"{{{labels[:-1]}}}" if labels else ""
            lines.append(f"{self.name}_sum{tail} {number(total)}")
            lines.append(f"{self.name}_count{tail} {count}")
        return lines


class LabelledCounter:
    """A counter with one label whose values are given by the code, never by a request."""

    def __init__(self, name: str, help_text: str, label: str, values: Iterable[str] = ()) -> None:
        self.name, self.help, self.label = name, help_text, label
        self._lock = threading.Lock()
        self._counts = {value: 0 for value in values}

    def inc(self, value: str) -> None:
        with self._lock:
            self._counts[value] = self._counts.get(value, 0) + 1

    def get(self, value: str) -> int:
        with self._lock:
            return self._counts.get(value, 0)

    def text(self) -> list[str]:
        with self._lock:
            items = sorted(self._counts.items())
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"] + [
            f'{self.name}{{{self.label}="{value}"}} {count}' for value, count in items]


class WebhookMetrics:
    """`POST /webhook` answers by HTTP code (every one: rejections too) and how long each took
    from the request's head to the answer."""

    def __init__(self) -> None:
        self.requests = LabelledCounter(
            "bot_bottle_webhook_requests_total", "Answers to POST /webhook by HTTP status code.",
            "code", ("202",))
        self.ack = Histogram("bot_bottle_webhook_ack_seconds",
                             "Time from a webhook request's head to its answer.", ACK_BUCKETS)

    def observe(self, status: int, seconds: float) -> None:
        self.requests.inc(str(int(status)))
        self.ack.observe(seconds)

    def text(self) -> list[str]:
        return self.requests.text() + self.ack.text()


class RunDurations:
    """`bot_bottle_run_duration_seconds{outcome}`: at each transition into a terminal state
    (failed, timed_out, destroyed), the seconds since the run was created."""

    def __init__(self) -> None:
        self.histogram = Histogram("bot_bottle_run_duration_seconds",
                                   "Seconds from a run's creation to each terminal transition, "
                                   "by the state it ended in.", DURATION_BUCKETS, "outcome",
                                   TERMINAL)

    def transition(self, run, old_state) -> None:
        """A store transition listener: `run` after the change, `old_state` before it."""
        new = run.state.value
        if new in TERMINAL and old_state.value != new:
            self.histogram.observe(run.updated_at - run.created_at, new)

    def text(self) -> list[str]:
        return self.histogram.text()


class ForgeErrors:
    """`bot_bottle_forge_errors_total{kind}`: every `ForgeError` a forge call raised."""

    def __init__(self) -> None:
        self.counter = LabelledCounter(
            "bot_bottle_forge_errors_total", "Forge (Gitea) calls that failed, by kind.", "kind",
            [kind for _, kind in _KINDS] + ["other"])

    def record(self, exc: BaseException) -> None:
        for cls, kind in _KINDS:
            if isinstance(exc, cls):
                self.counter.inc(kind)
                return
        self.counter.inc("other")

    def wrap(self, factory: Callable[[str, str], object]) -> Callable[[str, str], object]:
        """A forge factory whose forges count the errors their calls raise (and re-raise)."""
        def counted(owner: str, repo: str) -> object:
            return _CountingForge(factory(owner, repo), self)
        return counted

    def text(self) -> list[str]:
        return self.counter.text()


class _CountingForge:
    def __init__(self, forge, errors: ForgeErrors) -> None:
        self._forge = forge
        self._errors = errors

    def __getattr__(self, name: str):
        attr = getattr(self._forge, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except ForgeError as exc:
                self._errors.record(exc)
                raise
        return call


# the process's forge error count: forges are made in many places, all from one factory
FORGE_ERRORS = ForgeErrors()


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_start_time() -> float:
    """Seconds since the epoch when this process started (from /proc, as Prometheus'
    client libraries do); the import time of this module where /proc is missing."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
        return boot + ticks / _clock_ticks()
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def resident_memory() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_IMPORTED = time.time()


def gauge(name: str, help_text: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {number(value)}"]


def process_text(version: str) -> list[str]:
    return [
        "# HELP bot_bottle_build_info The running bot-bottle's version (always 1).",
        "# TYPE bot_bottle_build_info gauge",
        f'bot_bottle_build_info{{version="{_label(version)}"}} 1',
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {number(process_start_time())}",
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {resident_memory()}",
    ]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
