"""The op-log (each run's record of what happened: transitions, sidecar calls, pushes, PRs)
and its bounds. An agent decides how often it calls the sidecar and what paths it sends, so
every entry is bounded in size (strings cut with a marker, the whole detail at most
`DETAIL_MAX` bytes of JSON) and each run in rate: at most `RATE_MAX` entries per
`RATE_WINDOW` seconds. Entries over the rate are counted, not stored, and do not count as
the run's progress; one `oplog.dropped` entry saying how many were dropped is written
before the run's next stored entry. Entries the service itself relies on (transitions,
creation, `essential` ones such as an opened PR, the run's write scope) are never dropped.
The rate state lives in memory: a restart starts every run's window afresh.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_rows import OpLogEntry

# The bounds, in one place (deliberately not settings: they guard the service, not policy).
STRING_MAX = 512  # characters of one string in an entry's detail
DETAIL_MAX = 2048  # bytes of an entry's detail as JSON
KIND_MAX = 64  # characters of an entry's kind
RATE_MAX = 60  # entries stored per run per window (beyond: counted and dropped)
RATE_WINDOW = 60.0  # seconds
DROPPED = "oplog.dropped"  # kind of the entry that counts what was dropped
_RUNS_TRACKED = 4096  # rate windows kept in memory before ended ones are forgotten


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit} chars]"


def _cut_strings(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return _cut(value, STRING_MAX)
    if depth > 8:  # details are flat records; anything deeper is not worth keeping whole
        return _cut(json.dumps(value, sort_keys=True, default=str), STRING_MAX)
    if isinstance(value, dict):
        return {_cut(str(k), STRING_MAX): _cut_strings(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cut_strings(v, depth + 1) for v in value]
    return value


def bounded_detail(detail: dict) -> str:
    """`detail` as the JSON stored: strings over `STRING_MAX` cut with a marker; if it is
    still over `DETAIL_MAX` bytes, its top-level members are kept smallest first while they
    fit and `truncated` says how many bytes the whole was (small fields such as a status or
    a PR number survive; a long list does not)."""
    cut = _cut_strings(detail)
    text = json.dumps(cut, sort_keys=True)
    if len(text.encode()) <= DETAIL_MAX:
        return text
    kept: dict[str, object] = {"truncated": len(text.encode())}
    budget = DETAIL_MAX - len(json.dumps(kept).encode())
    # each member's "{...}" in its own dump stands for the ", " it adds to the whole
    members = sorted((len(json.dumps({k: v}).encode()), k, v) for k, v in cut.items())
    for size, key, value in members:
        if key != "truncated" and size <= budget:
            kept[key] = value
            budget -= size
    return json.dumps(kept, sort_keys=True)


class _Window:
    __slots__ = ("start", "stored", "dropped", "first_dropped_at")

    def __init__(self, start: float) -> None:
        self.start, self.stored, self.dropped = start, 0, 0
        self.first_dropped_at = start


class OpLog:
    """The op-log table through the shared `StoreDb`. `write` is for callers already inside
    a write transaction (the run part logs a transition with the change itself)."""

    def __init__(self, db: StoreDb) -> None:
        self._db = db
        self._windows: dict[int, _Window] = {}  # run id -> its rate window; under db.lock

    @staticmethod
    def _insert(conn: sqlite3.Connection, run_id: int, kind: str, detail_json: str,
                now: float) -> None:
        conn.execute("INSERT INTO op_log (run_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                     (run_id, now, _cut(kind, KIND_MAX), detail_json))

    def _flush(self, conn: sqlite3.Connection, run_id: int, now: float) -> None:
        """The count of dropped entries, written before the next entry that is kept."""
        window = self._windows.get(run_id)
        if window is None or not window.dropped:
            return
        self._insert(conn, run_id, DROPPED, json.dumps(
            {"dropped": window.dropped, "first_at": window.first_dropped_at,
             "message": f"{window.dropped} entries dropped (over {RATE_MAX} per "
                        f"{RATE_WINDOW:g}s)"}, sort_keys=True), now)
        window.dropped = 0

    def _admit(self, run_id: int, now: float) -> bool:
        window = self._windows.get(run_id)
        if window is None or now >= window.start + RATE_WINDOW or now < window.start:
            if window is None and len(self._windows) >= _RUNS_TRACKED:
                self._forget_ended(now)
            ended, window = window, _Window(now)
            if ended is not None and ended.dropped:  # still to be counted in the summary
                window.dropped, window.first_dropped_at = ended.dropped, ended.first_dropped_at
            self._windows[run_id] = window
        if window.stored >= RATE_MAX:
            if not window.dropped:
                window.first_dropped_at = now
            window.dropped += 1
            return False
        window.stored += 1
        return True

    def _forget_ended(self, now: float) -> None:
        for run_id, window in list(self._windows.items()):
            if now >= window.start + RATE_WINDOW and not window.dropped:
                del self._windows[run_id]

    def write(self, conn: sqlite3.Connection, run_id: int, kind: str, detail: dict,
              now: float, *, limited: bool = False) -> bool:
        """Append inside the caller's transaction; `limited` entries obey the rate cap.
        False when the entry was dropped (counted for the next `oplog.dropped`)."""
        if limited and not self._admit(run_id, now):
            return False
        self._flush(conn, run_id, now)
        self._insert(conn, run_id, kind, bounded_detail(detail), now)
        return True

    def append(self, run_id: int, kind: str, detail: dict, now: float, *,
               essential: bool = False,
               on_stored: Callable[[sqlite3.Connection], None] | None = None) -> bool:
        """Append one entry in its own transaction, rate-capped unless `essential`; True if it
        was stored. `on_stored(conn)` runs in the same transaction only when it was (the
        run's progress mark: a dropped entry is no progress)."""
        with self._db.atomic() as conn:
            stored = self.write(conn, run_id, kind, detail, now, limited=not essential)
            if stored and on_stored is not None:
                on_stored(conn)
        return stored

    def entries(self, run_id: int) -> list[OpLogEntry]:
        rows = self._db.rows("SELECT id, run_id, at, kind, detail FROM op_log "
                             "WHERE run_id = ? ORDER BY id", (run_id,))
        return [OpLogEntry(r["id"], r["run_id"], r["at"], r["kind"], json.loads(r["detail"]))
                for r in rows]
