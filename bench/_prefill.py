"""Pre-fill an orchestrator store with many processed webhook deliveries, fast, for the
"flat at a million deliveries" measurement of `webhook_vs_peer.py --stored N`.

Owns one thing: `prefill(db_path, n, template)`. The schema is the store's own (the file is
opened once through `SqliteRunStore`, which applies every migration), then rows go in with
plain `INSERT`s in large transactions, `synchronous=OFF` and no journal (a pre-fill need not
survive a crash; WAL again at the end, as the store keeps it). Where a delivery's processed
state lives is read from the file, for the two layouts the store has had:
- up to schema v5, in the delivery's row (`deliveries.processed_at`, `outcome`);
- from v6, apart: `delivery_outcomes` (seq, processed_at, outcome) and the per-outcome
  counts in `delivery_tally`; `delivery_pending` holds only unprocessed ones, so none here.
A later schema version is filled as v6 with a warning in the result (check it still fits);
a NOT NULL column this module cannot fill stops it with `SchemaUnknown` rather than guessing.

Each row is a real-looking delivery: the template with a distinct sequence, its SHA-256, a
distinct delivery id and comment key, received and processed ("ignored") within the last day,
so a retention period of days prunes none of them during the measurement.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from bot_bottle.orchestrator.store import SqliteRunStore

BATCH = 5000
KNOWN_VERSION = 6  # the newest schema this module knows


class SchemaUnknown(Exception):
    pass


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[bool, bool, bool]]:
    """name -> (not null, has default, primary key); empty if there is no such table."""
    return {r[1]: (bool(r[3]), r[4] is not None, bool(r[5]))
            for r in conn.execute(f'PRAGMA table_info("{table}")')}


def _insert(conn: sqlite3.Connection, table: str, wanted: tuple[str, ...]) -> tuple[str, list]:
    """An INSERT for the `wanted` columns `table` has; SchemaUnknown if it has a NOT NULL
    column without a default that is not among them."""
    cols = _columns(conn, table)
    use = [c for c in wanted if c in cols]
    missing = [c for c, (notnull, default, pk) in cols.items()
               if notnull and not default and not pk and c not in use]
    if missing:
        raise SchemaUnknown(f"{table}: cannot fill NOT NULL column(s) {missing}; "
                            "update bench/_prefill.py for the store's schema")
    return (f'INSERT INTO "{table}" ({", ".join(use)}) VALUES ({", ".join("?" * len(use))})',
            use)


def prefill(db_path: Path, n: int, template: str, progress=None) -> dict:
    """Add `n` processed deliveries to the store at `db_path` (made if missing). Returns
    what was done: rows, the layout, seconds, the file's size, a warning or None."""
    start = time.monotonic()
    SqliteRunStore(db_path).close()  # the store's own migrations make the schema
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        apart = bool(_columns(conn, "delivery_outcomes"))
        warning = (f"store schema v{version} is newer than v{KNOWN_VERSION}: filled as "
                   f"v{KNOWN_VERSION}" if version > KNOWN_VERSION else None)
        row_state = () if apart else ("processed_at", "outcome")
        main_sql, main_cols = _insert(conn, "deliveries", (
            "seq", "delivery_id", "event_type", "body", "body_sha256", "received_at",
            "comment_key") + row_state)
        if not apart and "processed_at" not in main_cols:
            raise SchemaUnknown("no processed state in deliveries and no delivery_outcomes")
        side_sql, side_cols = (_insert(conn, "delivery_outcomes",
                                       ("seq", "processed_at", "outcome"))
                               if apart else (None, []))
        conn.execute("PRAGMA synchronous=OFF")
        mode = conn.execute("PRAGMA journal_mode=OFF").fetchone()[0]
        first = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM deliveries").fetchone()[0] + 1
        now = time.time()
        done = 0
        while done < n:
            rows, side_rows = [], []
            for i in range(done, min(n, done + BATCH)):
                seq = first + i
                tag = f"prefill-{seq}-{seq:032x}"
                body = template.replace("@@SEQ@@", tag).encode()
                at = now - 86400.0 * (n - i) / n
                values = {"seq": seq, "delivery_id": f"prefill-{seq:032x}",
                          "event_type": "issue_comment", "body": body,
                          "body_sha256": hashlib.sha256(body).hexdigest(), "received_at": at,
                          "comment_key": f"comment 1001 created {tag}",
                          "processed_at": at + 0.05, "outcome": "ignored"}
                rows.append([values[c] for c in main_cols])
                if side_sql:
                    side_rows.append([values[c] for c in side_cols])
            conn.execute("BEGIN")
            conn.executemany(main_sql, rows)
            if side_sql:
                conn.executemany(side_sql, side_rows)
                conn.execute("INSERT INTO delivery_tally (outcome, n) VALUES ('ignored', ?) "
                             "ON CONFLICT (outcome) DO UPDATE SET n = n + excluded.n",
                             (len(side_rows),))
            conn.execute("COMMIT")
            done += len(rows)
            if progress:
                progress(done)
        if mode.lower() == "off":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return {"rows": n, "layout": "delivery_outcomes" if apart else "in the row",
            "version": version, "seconds": time.monotonic() - start,
            "bytes": Path(db_path).stat().st_size, "warning": warning}
