"""The runs as the outside world reads them: the versioned JSON document of `GET /runs`,
`GET /runs/<id>` and `status --json`, and the `status` table, each built by one SQL query.

Why SQL: `status` must stay fast as a whole process with 100,000 live runs. Each run's JSON
object and each table line is made by SQLite (in C) and the rows are joined there too, so
Python touches one string, not 100,000 rows. The document's shape (version 1) is documented
in docs/architecture.md ("The runs document"); a change to a field's name or meaning needs a
new `SCHEMA_VERSION`.

Times are ISO-8601 UTC to the second (`2026-11-30T01:02:03Z`); `seconds_in_state` counts from
the run's last state change (its last `transition` op, else its creation) to `now`. Nothing
here reads the run token or the prompts a run keeps.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot_bottle.orchestrator.store_rows import StoreError

SCHEMA_VERSION = 1
STATUS_COLUMNS = ("ID", "REPO#ISSUE", "PR", "AGENT", "SLUG", "STATE", "AGE", "LAST DONE")


def _iso(column: str) -> str:
    # NULL stays NULL (json null); `datetime` is SQLite's cheapest formatter
    return f"replace(datetime({column}, 'unixepoch'), ' ', 'T') || 'Z'"


_SINCE = ("coalesce((SELECT o.at FROM op_log o WHERE o.run_id = r.id AND o.kind = 'transition' "
          "ORDER BY o.id DESC LIMIT 1), r.created_at)")
# the object's members in documented order
_RUN_OBJECT = f"""json_object(
 'id', r.id, 'owner', r.owner, 'repo', r.repo, 'issue_number', r.issue_number,
 'pr_number', r.pr_number, 'agent', r.agent, 'bottles', json(r.bottles), 'slug', r.slug,
 'state', r.state, 'created_at', {_iso('r.created_at')}, 'updated_at', {_iso('r.updated_at')},
 'state_since', {_iso('r.since')}, 'seconds_in_state', max(0, CAST(:now - r.since AS INTEGER)),
 'last_progress_at', {_iso('r.last_progress_at')}, 'last_done_status', r.last_done_status,
 'last_done_summary', r.last_done_summary, 'error', r.error)"""
# `since` is a column of the subquery, so both members that need it name one expression
_FROM = f"FROM (SELECT r.*, {_SINCE} AS since FROM runs r {{where}} ORDER BY r.id) r"
_DOCUMENT = (f"""SELECT '{{"version":{SCHEMA_VERSION},"runs":['"""
             f""" || coalesce(group_concat(j, ','), '') || ']}}'"""
             f""" FROM (SELECT {_RUN_OBJECT} AS j {_FROM})""")
_ONE = f"SELECT {_RUN_OBJECT} {_FROM}"


def runs_document(conn: sqlite3.Connection, now: float, include_destroyed: bool = False) -> str:
    """`{"version": 1, "runs": [...]}` as compact JSON text, runs by id."""
    where = "" if include_destroyed else "WHERE r.state != 'destroyed'"
    return conn.execute(_DOCUMENT.replace("{where}", where), {"now": now}).fetchone()[0]


def run_object(conn: sqlite3.Connection, run_id: int, now: float) -> str | None:
    """One run's object (the document's element) as JSON text; None when there is no such run."""
    row = conn.execute(_ONE.replace("{where}", "WHERE r.id = :id"),
                       {"now": now, "id": run_id}).fetchone()
    return None if row is None else row[0]


def run_document(conn: sqlite3.Connection, run_id: int, now: float) -> str | None:
    """`{"version": 1, "run": {...}}` for `GET /runs/<id>`; None when there is no such run."""
    one = run_object(conn, run_id, now)
    return None if one is None else f'{{"version":{SCHEMA_VERSION},"run":{one}}}'


# ---- the status table -------------------------------------------------------------------

def _age(seconds: str) -> str:
    return (f"CASE WHEN {seconds} >= 86400 THEN ({seconds} / 86400) || 'd' "
            f"WHEN {seconds} >= 3600 THEN ({seconds} / 3600) || 'h' "
            f"WHEN {seconds} >= 60 THEN ({seconds} / 60) || 'm' ELSE {seconds} || 's' END")


def _cell(expr: str) -> str:
    # anything outside printable ASCII goes through Python's check (rare: control characters
    # would break the table; other non-ASCII text is kept as it is)
    return f"CASE WHEN ({expr}) GLOB '*[^ -~]*' THEN printable({expr}) ELSE ({expr}) END"


_CELLS = (
    "CAST(id AS TEXT)",
    _cell("owner || '/' || repo || '#' || issue_number"),
    "CASE WHEN pr_number IS NULL THEN '-' ELSE '#' || pr_number END",
    _cell("agent"),
    _cell("coalesce(slug, '-')"),
    "state",
    _age("max(0, CAST(:now - created_at AS INTEGER))"),
    _cell("coalesce(last_done_status, '-')"),
)
_NAMES = tuple(f"c{i}" for i in range(len(_CELLS)))
# the header is the first row, so it counts for the widths like any cell
_TABLE = (
    "WITH cells AS (SELECT -1 AS id, "
    + ", ".join(f"'{h}' AS {n}" for h, n in zip(STATUS_COLUMNS, _NAMES))
    + " UNION ALL SELECT id, " + ", ".join(f"{e} AS {n}" for e, n in zip(_CELLS, _NAMES))
    + " FROM runs {where}), widths AS (SELECT "
    + ", ".join(f"max(length({n})) AS w{n}" for n in _NAMES)
    + " FROM cells) SELECT group_concat(line, char(10)) FROM (SELECT rtrim(printf('"
    + "  ".join(["%!-*s"] * len(_NAMES)) + "', "
    + ", ".join(f"w{n}, {n}" for n in _NAMES) + ")) AS line FROM cells, widths ORDER BY id)"
)


def _printable(text: str | None) -> str | None:
    if text is None or text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def status_table(conn: sqlite3.Connection, now: float, include_destroyed: bool = False) -> str:
    """A fixed-width table, header first, columns two spaces apart, one line per run."""
    conn.create_function("printable", 1, _printable, deterministic=True)
    where = "" if include_destroyed else "WHERE state != 'destroyed'"
    return conn.execute(_TABLE.replace("{where}", where), {"now": now}).fetchone()[0] + "\n"


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """The DB opened read-only (no writer, no migration: safe beside a serving orchestrator).
    A missing file is a `StoreError`, never a new empty database."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no database at {path}")
    try:
        return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
