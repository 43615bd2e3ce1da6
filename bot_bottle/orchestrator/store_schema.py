"""The orchestrator DB's schema: `MIGRATIONS`, applied in order by `migrate(conn)` and
counted in `PRAGMA user_version` (this module owns that number for the whole file). Other
layers' tables (the forge layer's `forge_state`) come in as idempotent hooks the composition
root passes to `migrate`, applied after the migrations on every open.

Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from typing import Callable


_V1 = """
CREATE TABLE IF NOT EXISTS deliveries (
    -- AUTOINCREMENT: `seq` is arrival order and must never be reused if old rows are pruned
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT UNIQUE,
    event_type TEXT NOT NULL,
    body BLOB NOT NULL,
    body_sha256 TEXT NOT NULL,
    received_at REAL NOT NULL,
    processed_at REAL,
    outcome TEXT,
    UNIQUE (event_type, body_sha256)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (seq) WHERE processed_at IS NULL;

CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    repo TEXT NOT NULL,
    issue_number INTEGER NOT NULL,
    agent TEXT NOT NULL,
    bottles TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    run_token TEXT NOT NULL,
    slug TEXT,
    pr_number INTEGER,
    last_progress_at REAL,
    last_done_status TEXT,
    last_done_summary TEXT,
    pending_prompt TEXT,
    error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_live_per_issue
    ON runs (owner, repo, issue_number) WHERE state != 'destroyed';
CREATE INDEX IF NOT EXISTS runs_issue ON runs (owner, repo, issue_number);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE UNIQUE INDEX IF NOT EXISTS runs_token ON runs (run_token);
CREATE INDEX IF NOT EXISTS runs_pr ON runs (owner, repo, pr_number) WHERE pr_number IS NOT NULL;

CREATE TABLE IF NOT EXISTS op_log (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS op_log_run ON op_log (run_id, id);

-- no foreign key on run_id: a done file naming an unknown run must be recorded (and then
-- ignored by the orchestrator), not wedge the relay on a constraint error forever
CREATE TABLE IF NOT EXISTS done_events (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    run_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    at REAL NOT NULL,
    processed_at REAL
);
CREATE INDEX IF NOT EXISTS done_events_pending ON done_events (id) WHERE processed_at IS NULL;

CREATE TABLE IF NOT EXISTS relay_cursor (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- run_id is NULL for a reply about an issue that got no run (say, a refused launch)
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs (id),
    owner TEXT NOT NULL,
    repo TEXT NOT NULL,
    number INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at REAL,
    dropped_at REAL,
    posting_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at)
    WHERE sent_at IS NULL AND dropped_at IS NULL;
"""


def _v1(conn: sqlite3.Connection) -> None:
    for stmt in _V1.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _v2(conn: sqlite3.Connection) -> None:
    """`runs.launch_prompt`: a launch's prompt, kept until the bottle exists (a crash while
    starting puts the run back in the queue with it). A queued run's prompt moves there from
    `pending_prompt`, which from now on holds only a trusted comment's prompt."""
    conn.execute("ALTER TABLE runs ADD COLUMN launch_prompt TEXT")
    conn.execute("UPDATE runs SET launch_prompt = pending_prompt, pending_prompt = NULL "
                 "WHERE state = 'queued'")


def _v3(conn: sqlite3.Connection) -> None:
    """`deliveries.comment_key`: a comment's id and edit time (see `events.comment_key`),
    unique, so one comment replayed under the other comment event type is a duplicate."""
    conn.execute("ALTER TABLE deliveries ADD COLUMN comment_key TEXT")
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS deliveries_comment ON deliveries "
                 "(comment_key) WHERE comment_key IS NOT NULL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]


def migrate(conn: sqlite3.Connection,
            hooks: tuple[Callable[[sqlite3.Connection], None], ...] = ()) -> int:
    """Apply the migrations the file has not seen, each in its own transaction, then the
    other layers' idempotent `hooks`; returns the resulting version. `conn` must be in
    autocommit mode (`isolation_level=None`)."""
    # checked outside a write transaction so an up-to-date file opens even when read-only
    if conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
        _apply_hooks(conn, hooks)
        return conn.execute("PRAGMA user_version").fetchone()[0]
    for version, step in enumerate(MIGRATIONS, start=1):
        # IMMEDIATE: two processes opening a fresh file must not both run the same step
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= version:
                conn.execute("ROLLBACK")
                continue
            step(conn)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    _apply_hooks(conn, hooks)
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _apply_hooks(conn: sqlite3.Connection, hooks) -> None:
    for hook in hooks:
        conn.execute("BEGIN IMMEDIATE")
        try:
            hook(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
