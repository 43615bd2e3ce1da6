"""The service's log, as an operator reads it: how it is set up (`configure`: a level checked
by name, and under journald each line prefixed with its syslog priority so `journalctl -p err`
finds the failures), one line per run transition (`RunLog`, a store run listener:
`run N owner/repo#issue: from -> to (reason)`, failures at ERROR and time-outs at WARNING with
where the agent log is), and that place (`agent_log_hint`)."""

from __future__ import annotations

import logging
import os
import threading
from typing import IO

from bot_bottle.orchestrator.model import RunRecord, RunState

log = logging.getLogger(__name__)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# sd-daemon(3): "<N>" at the start of a line sets its priority in the journal
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}
FORMAT = "%(levelname)s %(name)s: %(message)s"
_LEVEL_OF = {RunState.FAILED: logging.ERROR, RunState.TIMED_OUT: logging.WARNING}


class JournalFormatter(logging.Formatter):
    """Every line of a record (a traceback too) carries the record's priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelno, 6 if record.levelno < 30 else 3)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def configure(level: str, *, journal: bool, stream: IO[str]) -> None:
    """The root logger writes to `stream` at `level` (a name in LEVELS, any case); ValueError
    names the known levels for any other."""
    name = level.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"BOT_BOTTLE_LOG_LEVEL={level!r} is not a level: use one of "
                         f"{', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter(FORMAT) if journal else logging.Formatter(FORMAT))
    logging.basicConfig(level=name, handlers=[handler], force=True)


def agent_log_hint(home: str | None, slug: str | None) -> str:
    """'; agent log: <path> (bot-bottle logs <slug>)', or '' before the bottle exists."""
    if not slug:
        return ""
    base = os.path.expanduser(home) if home else "$BOT_BOTTLE_HOME"
    return f"; agent log: {base}/state/{slug}/agent.log (bot-bottle logs {slug})"


class RunLog:
    """A run listener (`SqliteRunStore.add_run_listener`): a line when a run's state differs
    from the one last seen. The op-log's last transition says from where and why; for a run
    not seen yet in this process, only a transition at or after `since` (the service's start)
    is new, so a restart does not repeat old ones."""

    def __init__(self, store, *, home: str | None = None, since: float) -> None:
        self._store = store
        self._home = home
        self._since = since
        self._seen: dict[int, RunState] = {}
        self._guard = threading.Lock()

    def __call__(self, run: RunRecord) -> None:
        with self._guard:
            before = self._seen.get(run.id)
            if before is run.state:
                return
            if run.state is RunState.DESTROYED:
                self._seen.pop(run.id, None)  # never changes again: not kept
            else:
                self._seen[run.id] = run.state
        entry = next((e for e in reversed(self._store.op_log(run.id))
                      if e.kind in ("transition", "created")), None)
        if entry is None or (before is None and entry.at < self._since):
            return
        if entry.kind == "created":
            change = f"new -> {entry.detail.get('state')} (created, agent {run.agent})"
        else:
            change = f"{entry.detail.get('from')} -> {entry.detail.get('to')} " \
                     f"({entry.detail.get('reason')})"
        level = _LEVEL_OF.get(run.state, logging.INFO)
        hint = agent_log_hint(self._home, run.slug) if level > logging.INFO else ""
        log.log(level, "run %s %s#%s: %s%s", run.id, run.repo_full_name, run.issue_number,
                change, hint)
