"""The orchestrator's durable state in one SQLite file (`FORGE_DB_PATH`): webhook deliveries,
runs, the op-log, relayed done events and their cursor, and the comment outbox. Other
layers' tables in the same file (the forge layer's `forge_state`) are created through
`schema_hooks` and reached through `side_connection()`: the composition root wires them, so
this module never imports the forge layer.

Concurrency: every write goes through one writer connection guarded by a lock; webhook
deliveries use group commit (`store_deliveries`). Reads use one connection per thread; WAL
lets them run beside the writer. Done events and the outbox are in `store_queues`.
Every sqlite3 failure (read-only file, disk full, lock timeout) surfaces as `StoreError`.
The schema and its migrations live in `store_schema`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from bot_bottle.orchestrator import store_schema
from bot_bottle.orchestrator.store_deliveries import DeliveriesMixin, _Pending
from bot_bottle.orchestrator.store_queues import QueuesMixin
from bot_bottle.orchestrator.store_rows import (  # noqa: F401 (the store's public values)
    MUTABLE_RUN_FIELDS, RUN_SELECT, SLOT_STATES, DoneEvent, LiveRunExists, OpLogEntry, OutboxItem,
    RunNotFound, StoredDelivery, StoreError, list_runs_query, run_from_row)
from bot_bottle.orchestrator.model import RunRecord, RunState, check_transition

log = logging.getLogger(__name__)


class _Reader:
    """Holds a thread's reader connection; when the thread ends the holder is dropped with
    its thread-local and the finalizer closes the connection (request threads come and go)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.close = weakref.finalize(self, conn.close)


def _create_private(path: Path) -> None:
    """Create the DB file 0600 before SQLite does (it would make it 0644): SQLite gives the
    -wal and -shm files the database's own mode, so all three stay private, whatever the
    umask. An existing file is left as it is (the service narrows it at start, with a log)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        return
    os.chmod(path, 0o600)  # O_CREAT's mode went through the umask (only ever narrower)


class SqliteRunStore(DeliveriesMixin, QueuesMixin):
    def __init__(self, path: str | Path, *, clock: Callable[[], float] | None = None,
                 busy_timeout: float = 5.0, max_pages: int | None = None,
                 schema_hooks: Iterable[Callable[[sqlite3.Connection], None]] = ()) -> None:
        """`path` is a file path, a `file:` URI (e.g. `?mode=ro`), or `:memory:` (one thread
        only: everything then shares the writer connection). `max_pages` caps the file size
        (`PRAGMA max_page_count`); past it writes fail with `StoreError`. `schema_hooks`
        create other layers' tables (idempotently) on every open."""
        self._target = str(path)
        self._uri = self._target.startswith("file:")
        self._memory = self._target == ":memory:"
        if not (self._uri or self._memory):
            Path(self._target).parent.mkdir(parents=True, exist_ok=True)
            _create_private(Path(self._target))
        self._clock = clock or time.time
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._closed = False
        self.commit_count = 0  # writer commits; lets tests see that deliveries are batched
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._readers_lock = threading.Lock()
        self._run_listeners: list[Callable[[RunRecord], None]] = []
        self._transition_listeners: list[Callable[[RunRecord, RunState], None]] = []
        self._outcomes: dict[str, int] | None = None  # see `delivery_counts`
        self._wconn = self._connect()
        try:
            if not self._memory:
                self._wconn.execute("PRAGMA journal_mode = WAL").fetchall()
            if max_pages is not None:
                self._wconn.execute(f"PRAGMA max_page_count = {int(max_pages):d}").fetchall()
            self.schema_version = store_schema.migrate(self._wconn, tuple(schema_hooks))
            self._side_conn = self._wconn if self._memory else self._connect()
        except (sqlite3.Error, StoreError) as exc:
            self._wconn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open store {self._target}: {exc}") from exc
        self._queue: list[_Pending] = []
        self._queue_cond = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
        self._writer.start()

    def add_run_listener(self, listener: Callable[[RunRecord], None]) -> None:
        """`listener(run)` after every committed change of a run (the composition root mirrors
        runs into the forge layer's `forge_state`); a failing listener is logged, never raised."""
        self._run_listeners.append(listener)

    def _changed(self, run: RunRecord) -> RunRecord:
        for listener in self._run_listeners:
            try:
                listener(run)
            except Exception:  # a mirror must not undo or block the change it mirrors
                log.exception("run listener failed for run %s", run.id)
        return run

    def side_connection(self) -> sqlite3.Connection:
        """A connection to the same file for another layer's own store (e.g. forge state),
        apart from the writer so its transactions never interleave with ours."""
        return self._side_conn

    def __enter__(self) -> "SqliteRunStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- connections ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._target, uri=self._uri, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            # the first statement is where a file that is not a database fails
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000):d}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self._target}: {exc}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        holder = getattr(self._local, "reader", None)
        if holder is None:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            holder = _Reader(conn)
            self._local.reader = holder
            with self._readers_lock:
                self._readers.add(holder)
        return holder.conn

    def _rows(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        # fetchall, always: a half-read statement would pin an old snapshot of the WAL
        try:
            if self._memory:
                with self._lock:
                    return self._wconn.execute(sql, tuple(params)).fetchall()
            return self._reader().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc

    @contextmanager
    def _atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection; sqlite3 errors become StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._wconn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"write failed: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("store: rollback failed")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"write failed: {exc}") from exc
                raise
            self.commit_count += 1

    # ---- runs ----------------------------------------------------------------------------

    def create_run(self, owner: str, repo: str, issue_number: int, agent: str,
                   bottles: Iterable[str], state: RunState, run_token: str,
                   now: float, *, launch_prompt: str | None = None) -> RunRecord:
        """`launch_prompt` is written in the same transaction: a launch is never recorded
        without what it needs to be made again."""
        state, bottles = RunState(state), list(bottles)
        if not run_token:
            raise ValueError("a run needs a run token")
        with self._atomic() as conn:
            live = conn.execute("SELECT id FROM runs WHERE owner = ? AND repo = ? AND "
                                "issue_number = ? AND state != 'destroyed'",
                                (owner, repo, issue_number)).fetchall()
            if live:
                raise LiveRunExists(f"{owner}/{repo}#{issue_number} already has live run "
                                    f"{live[0]['id']}")
            run_id = conn.execute(
                "INSERT INTO runs (owner, repo, issue_number, agent, bottles, state, created_at, "
                "updated_at, run_token, launch_prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (owner, repo, issue_number, agent, json.dumps(bottles), state.value, now,
                 now, run_token, launch_prompt)).lastrowid
            self._op(conn, run_id, "created", {"state": state.value, "agent": agent,
                                               "bottles": bottles}, now)
            run = self._run_in(conn, run_id)
        return self._changed(run)

    def get_run(self, run_id: int) -> RunRecord | None:
        rows = self._rows(f"{RUN_SELECT} WHERE id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    def get_run_by_token(self, token: str) -> RunRecord | None:
        """Only a live run answers to its token: a destroyed run's bottle has no business."""
        if not token:
            return None
        rows = self._rows(f"{RUN_SELECT} WHERE run_token = ? AND state != 'destroyed'", (token,))
        return run_from_row(rows[0]) if rows else None

    def live_run_for_issue(self, owner: str, repo: str, issue_number: int) -> RunRecord | None:
        rows = self._rows(f"{RUN_SELECT} WHERE owner = ? AND repo = ? AND issue_number = ? "
                          "AND state != 'destroyed'", (owner, repo, issue_number))
        return run_from_row(rows[0]) if rows else None

    def run_for_pr(self, owner: str, repo: str, pr_number: int) -> RunRecord | None:
        """The run that opened the PR: a live one if any, else the latest."""
        rows = self._rows(f"{RUN_SELECT} WHERE owner = ? AND repo = ? AND pr_number = ? "
                          "ORDER BY state = 'destroyed', id DESC LIMIT 1", (owner, repo, pr_number))
        return run_from_row(rows[0]) if rows else None

    def latest_run_for_issue(self, owner: str, repo: str, issue_number: int) -> RunRecord | None:
        """The issue's newest run in any state (one run per issue, ever, counts destroyed ones)."""
        rows = self._rows(f"{RUN_SELECT} WHERE owner = ? AND repo = ? AND issue_number = ? "
                          "ORDER BY id DESC LIMIT 1", (owner, repo, issue_number))
        return run_from_row(rows[0]) if rows else None

    def list_runs(self, include_destroyed: bool = False, states: Iterable[RunState] | None = None,
                  limit: int | None = None) -> list[RunRecord]:
        """Runs in id order; `states`, when given, overrides `include_destroyed`."""
        query = list_runs_query(include_destroyed, states, limit)
        return [] if query is None else [run_from_row(r) for r in self._rows(*query)]

    def with_reader(self, read: Callable[[sqlite3.Connection], object]):
        """`read(conn)` on this thread's reader connection (the writer's, under its lock, for
        `:memory:`); for the one-query views in `run_listing`. sqlite3 errors are StoreError."""
        try:
            if self._memory:
                with self._lock:
                    return read(self._wconn)
            return read(self._reader())
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc

    def outbox_pending_count(self) -> int:
        """Comments not yet sent nor dropped (counted on the `outbox_due` partial index)."""
        return self._rows("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL "
                          "AND dropped_at IS NULL")[0][0]

    def count_runs_by_state(self) -> dict[str, int]:
        counts = {s.value: 0 for s in RunState}
        for r in self._rows("SELECT state, COUNT(*) AS n FROM runs GROUP BY state"):
            counts[r["state"]] = r["n"]
        return counts

    def oldest_queued_run(self) -> RunRecord | None:
        rows = self._rows(f"{RUN_SELECT} WHERE state = 'queued' ORDER BY id LIMIT 1")
        return run_from_row(rows[0]) if rows else None

    def slot_holders(self) -> int:
        """Runs that hold a running slot (a bottle process may be up)."""
        rows = self._rows(f"SELECT COUNT(*) FROM runs WHERE state IN "
                          f"({', '.join('?' * len(SLOT_STATES))})", SLOT_STATES)
        return rows[0][0]

    def transition(self, run_id: int, new_state: RunState, *, now: float, reason: str,
                   **fields) -> RunRecord:
        """Move the run to `new_state` (checked against the transition table) and set
        `fields`, with the op-log row in the same transaction."""
        new_state = RunState(new_state)
        values = self._checked_fields(fields)
        with self._atomic() as conn:
            old = self._run_in(conn, run_id)
            check_transition(old.state, new_state)
            self._set(conn, run_id, now, {**values, "state": new_state.value})
            self._op(conn, run_id, "transition", {"from": old.state.value, "to": new_state.value,
                                                  "reason": reason}, now)
            run = self._run_in(conn, run_id)
        for listener in self._transition_listeners:
            try:
                listener(run, old.state)
            except Exception:  # a measurement must not undo or block the change
                log.exception("transition listener failed for run %s", run_id)
        return self._changed(run)

    def add_transition_listener(self, listener: Callable[[RunRecord, RunState], None]) -> None:
        """`listener(run, old_state)` after every committed transition (`/metrics` observes
        run durations); a failing listener is logged, never raised."""
        self._transition_listeners.append(listener)

    def update_run(self, run_id: int, *, now: float, **fields) -> RunRecord:
        """Set non-state fields; states change only through `transition`."""
        values = self._checked_fields(fields)
        with self._atomic() as conn:
            self._run_in(conn, run_id)
            self._set(conn, run_id, now, values)
            run = self._run_in(conn, run_id)
        return self._changed(run)

    @staticmethod
    def _checked_fields(fields: dict) -> dict:
        unknown = set(fields) - MUTABLE_RUN_FIELDS
        if unknown:
            raise ValueError(f"cannot set run fields {sorted(unknown)} here")
        if "bottles" in fields:
            fields = {**fields, "bottles": json.dumps(list(fields["bottles"]))}
        return fields

    @staticmethod
    def _set(conn: sqlite3.Connection, run_id: int, now: float, values: dict) -> None:
        values = {**values, "updated_at": now}
        # column names come from MUTABLE_RUN_FIELDS (checked above), never from callers' data
        conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                     (*values.values(), run_id))

    @staticmethod
    def _run_in(conn: sqlite3.Connection, run_id: int) -> RunRecord:
        rows = conn.execute(f"{RUN_SELECT} WHERE id = ?", (run_id,)).fetchall()
        if not rows:
            raise RunNotFound(f"no run {run_id}")
        return run_from_row(rows[0])

    # ---- op-log --------------------------------------------------------------------------

    @staticmethod
    def _op(conn: sqlite3.Connection, run_id: int, kind: str, detail: dict, now: float) -> None:
        conn.execute("INSERT INTO op_log (run_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                     (run_id, now, kind, json.dumps(detail, sort_keys=True)))

    def append_op(self, run_id: int, kind: str, detail: dict, now: float) -> None:
        with self._atomic() as conn:
            self._op(conn, run_id, kind, detail, now)

    def op_log(self, run_id: int) -> list[OpLogEntry]:
        rows = self._rows("SELECT id, run_id, at, kind, detail FROM op_log WHERE run_id = ? "
                          "ORDER BY id", (run_id,))
        return [OpLogEntry(r["id"], r["run_id"], r["at"], r["kind"], json.loads(r["detail"]))
                for r in rows]

    # ---- lifecycle -----------------------------------------------------------------------

    def ping(self) -> bool:
        """True when the DB answers a query; never raises (for /healthz)."""
        try:
            return self._rows("SELECT 1")[0][0] == 1
        except Exception:
            return False

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close every connection. Idempotent."""
        with self._queue_cond:
            self._closing = True
            self._queue_cond.notify_all()
        self._writer.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wconn.close()
            if self._side_conn is not self._wconn:
                self._side_conn.close()
        with self._readers_lock:
            readers = list(self._readers)
        for holder in readers:
            holder.close()
