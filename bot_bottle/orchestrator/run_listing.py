"""The runs as the outside world reads them: the versioned JSON document of `GET /runs`,
`GET /runs/<id>` and `status --json`, and the `status` table (the one table format: the demo
prints it too).

Why ready text: `status` must stay fast as a whole process with 100,000 live runs. Each run's
JSON object and its `status` line (fixed column widths; SINCE is a time, not an age) are kept
in `run_views` and `run_lines`, rendered by SQLite triggers whenever the run changes
(`store_schema`), so a listing is a scan of ready text joined by SQLite in pages of
consecutive ids: Python touches a few hundred strings, not 100,000 rows, and never one buffer
the size of the whole answer. Nothing in a run's object depends on the reader's clock (that is
why version 2 has no `seconds_in_state`: the document's `at` minus a run's `state_since` is
its time in state). The document's shape is documented in docs/architecture.md ("The runs
document"); a change to a field's name or meaning needs a new `SCHEMA_VERSION`.

Times are ISO-8601 UTC to the second (`2026-11-30T01:02:03Z`). Nothing here reads the run
token or the prompts a run keeps. A file whose `run_views` still holds v4's two parts around
`seconds_in_state` (an orchestrator not restarted since the upgrade) is read by cutting that
member out, and a file older than v4 is rendered from `runs` on the fly: slower, same answer.
"""

from __future__ import annotations

# imports stay this light: `status` is timed as a whole process (no pathlib, typing, model)
import os
import sqlite3
import time
from collections.abc import Iterator

from bot_bottle.orchestrator.log_tail import printable
from bot_bottle.orchestrator.store_schema import STATUS_COLUMNS_V4 as STATUS_COLUMNS
from bot_bottle.orchestrator.store_schema import STATUS_FORMAT_V4
from bot_bottle.orchestrator.store_schema import STATUS_WIDTHS_V4 as STATUS_WIDTHS

SCHEMA_VERSION = 2

# v4 stored each object in two parts around this member (`store_schema.RENDER_V4`): cut off
# as bytes (a blob's length and substr need no scan for characters)
_V4_SPLIT = b',"seconds_in_state":'
_V4_OBJECT = (f"substr(CAST(v.head AS BLOB), 1, length(CAST(v.head AS BLOB)) - {len(_V4_SPLIT)})"
              " || v.tail")


def iso_time(at: float) -> str:
    """`2026-11-30T01:02:03Z`, as the documents write times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _objects(conn: sqlite3.Connection) -> tuple[str, str]:
    """Where each run's object is (`run_views`, or the same rows rendered from `runs` for a
    file older than v4) and the expression over `v` that is the object."""
    columns, whole = conn.execute("SELECT count(*), coalesce(max(name = 'object'), 0) "
                                  "FROM pragma_table_info('run_views')").fetchone()
    if whole:
        return "run_views", "v.object"
    if columns:  # v4's head and tail
        return "run_views", _V4_OBJECT
    return _views(conn, "run_views"), _V4_OBJECT


def _views(conn: sqlite3.Connection, table: str) -> str:
    """`run_views` or `run_lines`, or the same rows rendered from `runs` for a file not yet
    migrated to v4 (an orchestrator not restarted since the upgrade): slower, same answer."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (table,)).fetchone():
        return table
    from bot_bottle.orchestrator import store_schema as v4
    if table == "run_views":
        return f"({v4.RENDER_V4.replace('{where}', '')})"
    conn.create_function("printable", 1, _printable, deterministic=True)
    cells = ", ".join(f"CASE WHEN {c} GLOB '*[^ -~]*' THEN printable({c}) ELSE {c} END AS {c}"
                      for c in v4._CELLS_V4)
    return (f"(SELECT c.run_id AS run_id, c.c_state = 'destroyed' AS dead, {v4.LINE_V4} AS line "
            f"FROM (SELECT run_id, c_pr, c_state, c_since, {cells} "
            f"FROM ({v4.RENDER_CELLS_V4.replace('{where}', '')})) c)")


def _printable(text: str | None) -> str | None:
    return None if text is None else printable(text)


def _lines(conn: sqlite3.Connection) -> tuple[str, str]:
    return _views(conn, "run_lines"), "v.line"


def _pages(conn: sqlite3.Connection, table: str, layout, sep: str, ids_per_page: int,
           include_destroyed: bool) -> Iterator:
    """Each run's text (`layout(conn)`: where it is, and the expression over `v` that is the
    text) in id order, joined by `sep` in pages of `ids_per_page` consecutive ids (a range scan
    each: no sort, no subquery copying rows, and a page's text small enough for malloc to reuse
    its memory), all from one read snapshot. A stretch of destroyed runs is stepped over
    through the live runs' partial index."""
    own = not conn.in_transaction
    if own:  # every page from the same snapshot, even beside a writer
        conn.execute("BEGIN")
    try:
        views, expr = layout(conn)
        top = conn.execute(f"SELECT max(run_id) FROM {views}").fetchone()[0]
        if top is None:
            return
        ready = views == table
        if not ready:  # rendered on the fly: one pass, not one per page
            ids_per_page = top + 1
        live = "" if include_destroyed else "v.dead = 0 AND "
        hint = ""
        if ready:  # mostly live: a range scan; mostly destroyed: the live runs' index (a
            # lookup per row, but no reading of the destroyed runs' text in between)
            # (counted only as far as the answer needs: a quarter of the ids)
            few = not include_destroyed and conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} INDEXED BY {table}_live "
                "WHERE dead = 0 LIMIT ?)", (top // 4 + 1,)).fetchone()[0] * 4 < top
            hint = f" INDEXED BY {table}_live" if few else " NOT INDEXED"
        sql = (f"SELECT group_concat({expr}, {sep}) FROM {views} v{hint} "
               f"WHERE {live}v.run_id BETWEEN :lo AND :hi")
        skip = f"SELECT min(run_id) FROM {table} WHERE dead = 0 AND run_id > ?"
        lo = 0
        while lo <= top:
            hi = lo + ids_per_page - 1
            text = conn.execute(sql, {"lo": lo, "hi": hi}).fetchone()[0]
            if text is not None:
                yield text
                lo = hi + 1
            elif ready and not include_destroyed:
                lo = conn.execute(skip, (hi,)).fetchone()[0] or top + 1
            else:
                lo = hi + 1
    finally:
        if own:
            conn.execute("COMMIT")


def document_chunks(conn: sqlite3.Connection, now: float,
                    include_destroyed: bool = False) -> Iterator:
    """The runs document in pieces (text, or bytes on a `text_factory=bytes` connection);
    `now` is the answer's time, its `at`."""
    yield f'{{"version":{SCHEMA_VERSION},"at":"{iso_time(now)}","runs":['
    first = True
    for text in _pages(conn, "run_views", _objects, "','", 128, include_destroyed):
        if not first:
            yield ","
        first = False
        yield text
    yield "]}"


def runs_document(conn: sqlite3.Connection, now: float, include_destroyed: bool = False) -> str:
    """`{"version": 2, "at": ..., "runs": [...]}` as compact JSON text, runs by id."""
    return "".join(document_chunks(conn, now, include_destroyed))


def run_object(conn: sqlite3.Connection, run_id: int, now: float | None = None) -> str | None:
    """One run's object (the document's element) as JSON text; None when there is no such run.
    (`now` is not needed: nothing in the object depends on the clock.)"""
    views, expr = _objects(conn)
    row = conn.execute(f"SELECT {expr} FROM {views} v WHERE v.run_id = ?", (run_id,)).fetchone()
    return None if row is None else row[0]


def run_document(conn: sqlite3.Connection, run_id: int, now: float) -> str | None:
    """`{"version": 2, "at": ..., "run": {...}}` for `GET /runs/<id>`; None when there is no
    such run."""
    one = run_object(conn, run_id)
    return (None if one is None
            else f'{{"version":{SCHEMA_VERSION},"at":"{iso_time(now)}","run":{one}}}')


# ---- the status table -------------------------------------------------------------------

HEADER = (STATUS_FORMAT_V4.replace("%!-", "%-") % STATUS_COLUMNS).rstrip() + "\n"


def table_chunks(conn: sqlite3.Connection, now: float | None = None,
                 include_destroyed: bool = False) -> Iterator:
    """The `status` table in pieces: the header, then each run's stored line (fixed column
    widths, `STATUS_WIDTHS`, a longer cell pushing the rest of its line; text, or bytes on a
    `text_factory=bytes` connection). `now` is not needed: every cell is stored (SINCE is a
    time, not an age)."""
    yield HEADER
    for text in _pages(conn, "run_lines", _lines, "char(10)", 1024, include_destroyed):
        yield text
        yield "\n"


def status_table(conn: sqlite3.Connection, now: float | None = None,
                 include_destroyed: bool = False) -> str:
    """A table with fixed column widths, header first, columns two spaces apart, one line per
    run."""
    return "".join(table_chunks(conn, now, include_destroyed))


def open_readonly(path) -> sqlite3.Connection:
    """The DB opened read-only (no writer, no migration: safe beside a serving orchestrator).
    A missing file is a `StoreError`, never a new empty database."""
    path = os.fspath(path)
    try:
        if not os.path.isfile(path):
            raise sqlite3.OperationalError("no such file")
        return sqlite3.connect(_file_uri(os.path.realpath(path)) + "?mode=ro", uri=True,
                               timeout=5.0)
    except sqlite3.Error as exc:
        from bot_bottle.orchestrator.store_rows import StoreError
        if not os.path.isfile(path):
            raise StoreError(f"no database at {path}") from None
        raise StoreError(f"cannot open {path}: {exc}") from exc


def _file_uri(path: str) -> str:
    # what `Path.as_uri()` makes, without importing pathlib: every byte outside the
    # unreserved set percent-encoded, so `?`, `#` and `%` in a name stay part of it
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~"
    return "file://" + "".join(chr(b) if b in safe else f"%{b:02X}"
                               for b in os.fsencode(path))
