"""The egress gate's refusals as the service sees them.

The core CLI serves its bottle's egress gate and prints one line on stderr for each request the
gate refused: `bot-bottle: egress refused: <host>:<port>: <reason>`. The runner hands each such
line to the `Watch` it got from `EgressRefusals.watch(run_token)`; the line is logged at WARNING
with the run (`repo= issue= run=`, looked up from the run token once, when the first refusal
arrives) and counted for `/metrics` as `bot_bottle_egress_refused_total` — one series without
labels: host names come from the agent and would make the label set unbounded.

A flood costs nothing that grows: an integer, and at most `LOG_LIMIT` logged lines per CLI
process; the rest are counted and summed up in one line when the process ends.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from bot_bottle.orchestrator.log_tail import printable

log = logging.getLogger(__name__)

PREFIX = "bot-bottle: egress refused: "
METRIC = "bot_bottle_egress_refused_total"
HELP = "Requests the bottles' egress gates refused."
LOG_LIMIT = 50      # refusal lines logged per CLI process; the rest are only counted
TEXT_LIMIT = 300    # characters of one refusal kept in the log
UNKNOWN = "repo=- issue=- run=-"


def _clean(text: str) -> str:
    """One log line's worth of text the agent chose (host names): cut, control characters out."""
    return printable(text, TEXT_LIMIT) or "-"


def describe_run(store) -> Callable[[str], str | None]:
    """`repo= issue= run=` of the live run holding `token`, from the store (None if none)."""
    def describe(token: str) -> str | None:
        run = store.get_run_by_token(token) if token else None
        if run is None:
            return None
        return f"repo={run.repo_full_name} issue={run.issue_number} run={run.id}"
    return describe


class EgressRefusals:
    """The service-wide count, and one `Watch` per CLI process that reports lines into it."""

    def __init__(self, describe: Callable[[str], str | None] | None = None) -> None:
        self._describe = describe
        self._lock = threading.Lock()
        self._total = 0

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    def counters(self) -> dict[str, tuple[str, int]]:
        """For `/metrics`: name -> (help, value)."""
        return {METRIC: (HELP, self.total)}

    def _add(self) -> None:
        with self._lock:
            self._total += 1

    def where(self, token: str | None) -> str:
        if not token or self._describe is None:
            return UNKNOWN
        try:
            return self._describe(token) or UNKNOWN
        except Exception:  # a failing store must not break the reading of the CLI's output
            log.exception("could not look up the run of an egress refusal")
            return UNKNOWN

    def watch(self, token: str | None, slug: str | None = None) -> "Watch":
        return Watch(self, token, slug)


class Watch:
    """The refusals of one CLI process (one start or resume of a run's bottle)."""

    def __init__(self, refusals: EgressRefusals, token: str | None, slug: str | None) -> None:
        self._refusals = refusals
        self._token = token
        self._where: str | None = None
        self.slug = slug
        self.count = 0

    def _tag(self) -> str:
        if self._where is None:
            self._where = self._refusals.where(self._token)
        return f"{self._where} slug={self.slug or '-'}"

    def line(self, line: str) -> bool:
        """Take one stderr line of the CLI; True when it was a refusal."""
        if not line.startswith(PREFIX):
            return False
        self.count += 1
        self._refusals._add()
        if self.count <= LOG_LIMIT:
            log.warning("egress refused: %s %s", _clean(line[len(PREFIX):]), self._tag())
        return True

    def close(self) -> None:
        """At the CLI's end: one line for the refusals past `LOG_LIMIT`, when there were any."""
        if self.count > LOG_LIMIT:
            log.warning("egress refused %d more times (not logged one by one) %s",
                        self.count - LOG_LIMIT, self._tag())
