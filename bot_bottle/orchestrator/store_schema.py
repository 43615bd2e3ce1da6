"""The orchestrator DB's schema: `MIGRATIONS`, applied in order by `migrate(conn)` and
counted in `PRAGMA user_version` (this module owns that number for the whole file). Other
layers' tables (the forge layer's `forge_state`) come in as idempotent hooks the composition
root passes to `migrate`, applied after the migrations on every open. Since v4 it also owns
how a run is rendered for listings (`RENDER_V4`, the `status` columns): SQLite triggers keep
that ready text, which `run_listing` reads.

Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


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


def _iso(column: str) -> str:
    # NULL stays NULL (json null); `datetime` is SQLite's cheapest formatter
    return f"replace(datetime({column}, 'unixepoch'), ' ', 'T') || 'Z'"


# Characters that would break a terminal table line or reorder it (C0/C1 controls, DEL, line
# and paragraph separators, zero-width and bidi controls) become '?' in the status cells.
_UNSAFE = [*range(1, 32), *range(127, 160), *range(0x200B, 0x2010), 0x2028, 0x2029,
           *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


_CELLS_V4 = ("c_issue", "c_agent", "c_slug", "c_done")  # the cells made of forge or agent text


def _clean_v4(where: str) -> list[str]:
    """UPDATEs that turn `_UNSAFE` characters in the rows' text cells into '?', for the rows
    `where` selects that have a cell outside printable ASCII (rare). Several statements
    because SQLite's parser allows only so many nested calls in one expression."""
    rare = " OR ".join(f"{c} GLOB '*[^ -~]*'" for c in _CELLS_V4)
    out = []
    for start in range(0, len(_UNSAFE), 16):
        sets = []
        for column in _CELLS_V4:
            expr = column
            for code in _UNSAFE[start:start + 16]:
                expr = f"replace({expr}, char({code}), '?')"
            sets.append(f"{column} = {expr}")
        out.append(f"UPDATE run_cells SET {', '.join(sets)} WHERE ({rare}) {where}")
    return out


# The `status` table: its header and fixed column widths (a longer cell pushes the rest of its
# line right rather than being cut: a slug must stay whole). Fixed, because a width fitted to
# the rows would make every line depend on every other and `status` format each one again.
STATUS_COLUMNS_V4 = ("ID", "REPO#ISSUE", "PR", "AGENT", "SLUG", "STATE", "SINCE", "LAST DONE")
STATUS_WIDTHS_V4 = (6, 28, 6, 8, 32, 9, 17, 0)
STATUS_FORMAT_V4 = "  ".join(f"%!-{w:d}s" if w else "%s" for w in STATUS_WIDTHS_V4)

# One run as `status` and the runs document show it, rendered by SQLite from `runs r` with
# `since` (when it entered its state: its last `transition` op, else its creation). The
# object is split around `seconds_in_state`, the one member that depends on the reader's clock.
# The text cells (`_CELLS_V4`) still need `_clean_v4`, then the line is `LINE_V4`.
# Frozen with v4: a change in the rendering is a new migration that re-renders every row.
_SINCE_V4 = ("coalesce((SELECT o.at FROM op_log o WHERE o.run_id = r.id AND o.kind = "
             "'transition' ORDER BY o.id DESC LIMIT 1), r.created_at)")
_FROM_V4 = f"FROM (SELECT r.*, {_SINCE_V4} AS since FROM runs r {{where}}) r"
RENDER_V4 = f"""SELECT r.id AS run_id, r.state = 'destroyed' AS dead, r.since AS since,
 rtrim(json_object('id', r.id, 'owner', r.owner, 'repo', r.repo, 'issue_number', r.issue_number,
  'pr_number', r.pr_number, 'agent', r.agent, 'bottles', json(r.bottles), 'slug', r.slug,
  'state', r.state, 'created_at', {_iso('r.created_at')}, 'updated_at', {_iso('r.updated_at')},
  'state_since', {_iso('r.since')}), '}}') || ',"seconds_in_state":' AS head,
 ',' || substr(json_object('last_progress_at', {_iso('r.last_progress_at')},
  'last_done_status', r.last_done_status, 'last_done_summary', r.last_done_summary,
  'error', r.error), 2) AS tail
 {_FROM_V4}"""
RENDER_CELLS_V4 = f"""SELECT r.id AS run_id, r.owner || '/' || r.repo || '#' || r.issue_number AS c_issue,
 CASE WHEN r.pr_number IS NULL THEN '-' ELSE '#' || r.pr_number END AS c_pr,
 r.agent AS c_agent, coalesce(r.slug, '-') AS c_slug, r.state AS c_state,
 strftime('%Y-%m-%d %H:%MZ', r.since, 'unixepoch') AS c_since,
 coalesce(r.last_done_status, '-') AS c_done
 {_FROM_V4}"""
LINE_V4 = (f"rtrim(printf('{STATUS_FORMAT_V4}', c.run_id, c.c_issue, c.c_pr, c.c_agent, "
           "c.c_slug, c.c_state, c.c_since, c.c_done))")
_LINES_V4 = (f"SELECT c.run_id, r.state = 'destroyed', {LINE_V4} FROM run_cells c "
             "JOIN runs r ON r.id = c.run_id")


def _v4(conn: sqlite3.Connection) -> None:
    """`run_views` (each run's JSON object in two parts) and `run_lines` (its `status` line,
    made from its cells in `run_cells`), kept by triggers whenever the run or its transitions
    change, so `status` with 100,000 runs reads ready text instead of formatting rows
    (docs/performance.md); apart so each listing scans only its own text. The rows of
    existing runs are filled here."""
    conn.execute("""CREATE TABLE run_views (
        run_id INTEGER PRIMARY KEY, dead INTEGER NOT NULL, since REAL NOT NULL,
        head TEXT NOT NULL, tail TEXT NOT NULL)""")
    conn.execute("""CREATE TABLE run_cells (
        run_id INTEGER PRIMARY KEY, c_issue TEXT NOT NULL, c_pr TEXT NOT NULL,
        c_agent TEXT NOT NULL, c_slug TEXT NOT NULL, c_state TEXT NOT NULL,
        c_since TEXT NOT NULL, c_done TEXT NOT NULL)""")
    conn.execute("""CREATE TABLE run_lines (
        run_id INTEGER PRIMARY KEY, dead INTEGER NOT NULL, line TEXT NOT NULL)""")
    # the live runs' ids: `status` steps over long stretches of destroyed runs with them
    conn.execute("CREATE INDEX run_views_live ON run_views (run_id) WHERE dead = 0")
    conn.execute("CREATE INDEX run_lines_live ON run_lines (run_id) WHERE dead = 0")
    _view_triggers(conn, RENDER_V4)
    conn.execute("""CREATE TRIGGER run_views_delete AFTER DELETE ON runs BEGIN
        DELETE FROM run_views WHERE run_id = OLD.id;
        DELETE FROM run_cells WHERE run_id = OLD.id;
        DELETE FROM run_lines WHERE run_id = OLD.id; END""")
    conn.execute("INSERT INTO run_views " + RENDER_V4.replace("{where}", ""))
    conn.execute("INSERT INTO run_cells " + RENDER_CELLS_V4.replace("{where}", ""))
    for clean in _clean_v4(""):
        conn.execute(clean)
    conn.execute(f"INSERT INTO run_lines {_LINES_V4}")


def _view_triggers(conn: sqlite3.Connection, render_views: str) -> None:
    """The triggers that write a run's stored views (`render_views` for `run_views`, then its
    cells and line) whenever the run is made, changed or transitions. Called by v4 and v5 with
    their own frozen `run_views` renderer; the rest is v4's."""
    one = ";\n".join(["INSERT OR REPLACE INTO run_views "
                       + render_views.replace("{where}", "WHERE r.id = {id}"),
                       "INSERT OR REPLACE INTO run_cells "
                       + RENDER_CELLS_V4.replace("{where}", "WHERE r.id = {id}"),
                       *_clean_v4("AND run_id = {id}"),
                       f"INSERT OR REPLACE INTO run_lines {_LINES_V4} WHERE c.run_id = {{id}}"])
    for name, event, run_id in (("insert", "AFTER INSERT ON runs", "NEW.id"),
                                ("update", "AFTER UPDATE ON runs", "NEW.id"),
                                ("transition", "AFTER INSERT ON op_log WHEN NEW.kind = "
                                 "'transition'", "NEW.run_id")):
        conn.execute(f"CREATE TRIGGER run_views_{name} {event} BEGIN "
                     f"{one.replace('{id}', run_id)}; END")


# v5: the runs document's version 2 has no member that depends on the reader's clock, so each
# run's object is stored whole (`run_views.object`) and a listing only joins stored text.
# Frozen with v5, like v4's.
RENDER_V5 = f"""SELECT r.id AS run_id, r.state = 'destroyed' AS dead,
 json_object('id', r.id, 'owner', r.owner, 'repo', r.repo, 'issue_number', r.issue_number,
  'pr_number', r.pr_number, 'agent', r.agent, 'bottles', json(r.bottles), 'slug', r.slug,
  'state', r.state, 'created_at', {_iso('r.created_at')}, 'updated_at', {_iso('r.updated_at')},
  'state_since', {_iso('r.since')}, 'last_progress_at', {_iso('r.last_progress_at')},
  'last_done_status', r.last_done_status, 'last_done_summary', r.last_done_summary,
  'error', r.error) AS object
 {_FROM_V4}"""


def _v5(conn: sqlite3.Connection) -> None:
    """`run_views` holds each run's whole JSON object (the runs document's version 2, without
    `seconds_in_state`) instead of v4's two parts around it; the triggers that write a run's
    object are made again, the rest of v4 (`run_cells`, `run_lines`) is unchanged."""
    for name in ("insert", "update", "transition"):
        conn.execute(f"DROP TRIGGER run_views_{name}")
    conn.execute("DROP TABLE run_views")  # its index goes with it
    conn.execute("""CREATE TABLE run_views (
        run_id INTEGER PRIMARY KEY, dead INTEGER NOT NULL, object TEXT NOT NULL)""")
    conn.execute("CREATE INDEX run_views_live ON run_views (run_id) WHERE dead = 0")
    _view_triggers(conn, RENDER_V5)
    conn.execute("INSERT INTO run_views " + RENDER_V5.replace("{where}", ""))


def _v6(conn: sqlite3.Connection) -> None:
    """A delivery's processed state moves out of its row, so marking it never rewrites the
    body: `delivery_pending` holds the seq of each delivery not yet processed (the
    dispatcher's queue, in arrival order), `delivery_outcomes` each processed one's time and
    outcome (pruned, with the delivery, after the retention period), `delivery_tally` the
    processed deliveries by outcome ever (what `/metrics` reads: never changed by pruning).
    `deliveries.processed_at` and `outcome` are left as they are and no longer read or
    written: dropping them would rewrite every stored body. A file that has these tables
    already (its `user_version` set back by hand) is left as it is: its old columns are
    stale."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'delivery_tally'").fetchone():
        return
    conn.execute("CREATE TABLE delivery_pending (seq INTEGER PRIMARY KEY)")
    conn.execute("""CREATE TABLE delivery_outcomes (
        seq INTEGER PRIMARY KEY, processed_at REAL NOT NULL, outcome TEXT NOT NULL)""")
    conn.execute("""CREATE TABLE delivery_tally (
        outcome TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID""")
    conn.execute("INSERT INTO delivery_pending (seq) "
                 "SELECT seq FROM deliveries WHERE processed_at IS NULL")
    conn.execute("INSERT INTO delivery_outcomes (seq, processed_at, outcome) "
                 "SELECT seq, processed_at, COALESCE(outcome, '') FROM deliveries "
                 "WHERE processed_at IS NOT NULL")
    conn.execute("INSERT INTO delivery_tally (outcome, n) "
                 "SELECT outcome, COUNT(*) FROM delivery_outcomes GROUP BY outcome")
    conn.execute("DROP INDEX deliveries_pending")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]


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
