"""Webhook deliveries in the store: `record_delivery` and marking them processed both go
through the writer thread's group commit (`store_writer`: many callers, one transaction, one
fsync, each durable before its call returns; `record_delivery_async` answers through a
callback once durable, for the webhook port's event loop); pending deliveries in arrival order; the
counts `/metrics` shows; and pruning processed deliveries after the retention period. Works
through the shared `StoreDb` it is given.

A delivery's row (`deliveries`, with its body) is written once and never updated: whether
it is pending (`delivery_pending`), its outcome (`delivery_outcomes`) and the outcomes ever
(`delivery_tally`) live in small tables beside it (schema v6), so marking one writes a few
small rows, not its body again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import Counter
from typing import Callable, Iterable

from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_rows import StoredDelivery, StoreError
from bot_bottle.orchestrator.store_writer import GroupWriter

# Processed deliveries are kept this long (`FORGE_DELIVERY_RETENTION_DAYS`): dedupe works
# within it (Gitea's redelivery is by hand, and recent).
DEFAULT_RETENTION = 14 * 86400.0
# Pruning removes at most this many deliveries per transaction, so it never holds the
# writer long, and looks again this often (seconds) once nothing is left to prune.
PRUNE_BATCH = 100
PRUNE_EVERY = 60.0


def _insert(delivery_id: str | None, event_type: str, body: bytes, received_at: float,
            comment_key: str | None) -> Callable[[sqlite3.Connection], bool]:
    """The writer job that stores one delivery: True if it was new."""
    if not isinstance(event_type, str) or not event_type:
        raise ValueError("event_type must be a non-empty string")
    body = bytes(body)
    received_at = float(received_at)

    def insert(conn: sqlite3.Connection) -> bool:
        # hashed here, on the writer thread (which waits on the disk anyway), not the caller's
        cur = conn.execute(
            "INSERT OR IGNORE INTO deliveries "
            "(delivery_id, event_type, body, body_sha256, received_at, comment_key) "
            "VALUES (?, ?, ?, ?, ?, ?)", (delivery_id or None, event_type, body,
                                          hashlib.sha256(body).hexdigest(), received_at,
                                          comment_key or None))
        if cur.rowcount != 1:
            return False
        conn.execute("INSERT INTO delivery_pending (seq) VALUES (?)", (cur.lastrowid,))
        return True
    return insert


class Deliveries:
    def __init__(self, db: StoreDb, retention: float | None = DEFAULT_RETENTION) -> None:
        """`retention`: seconds a processed delivery is kept (None: for ever)."""
        if retention is not None and not retention > 0:
            raise ValueError("retention must be more than 0 seconds")
        self._db = db
        self._retention = retention
        self._next_prune = 0.0  # time.monotonic() of the next idle pruning step
        self._writer = GroupWriter(db, self._idle)

    def close(self) -> None:
        """Write what is queued and stop the writer thread. Idempotent."""
        self._writer.close()

    def record_delivery(self, delivery_id: str | None, event_type: str, body: bytes,
                        received_at: float, comment_key: str | None = None) -> bool:
        """Store a webhook delivery durably; False if it is a duplicate (same delivery id,
        same event type and body, or same `comment_key` — a comment's id and edit time,
        whatever its event type header said — among the deliveries still kept). An empty
        delivery id is stored as NULL."""
        return self._writer.submit(_insert(delivery_id, event_type, body, received_at,
                                           comment_key))

    def record_delivery_async(self, delivery_id: str | None, event_type: str, body: bytes,
                              received_at: float, comment_key: str | None = None, *,
                              callback: Callable[[bool | None, BaseException | None], None]
                              ) -> None:
        """`record_delivery` without waiting: returns at once, and once the insert is
        committed (durable) the writer thread calls `callback(fresh, None)`, or
        `callback(None, error)` if it could not be stored. A closed store raises StoreError
        here (and never calls back)."""
        self._writer.submit_async(_insert(delivery_id, event_type, body, received_at,
                                          comment_key), callback)

    def pending_deliveries(self, limit: int, after: int = 0) -> list[StoredDelivery]:
        # CROSS JOIN: walk the small pending table in order, look each body up by its key
        rows = self._db.rows(
            "SELECT d.seq, d.delivery_id, d.event_type, d.body, d.received_at "
            "FROM delivery_pending p CROSS JOIN deliveries d ON d.seq = p.seq "
            "WHERE p.seq > ? ORDER BY p.seq LIMIT ?", (after, limit))
        return [StoredDelivery(r["seq"], r["delivery_id"], r["event_type"], bytes(r["body"]),
                               r["received_at"]) for r in rows]

    def mark_delivery_processed(self, seq: int, outcome: str) -> None:
        self.mark_deliveries_processed([(seq, outcome)])

    def mark_deliveries_processed(self, outcomes: Iterable[tuple[int, str]], *,
                                  lazily: bool = False) -> None:
        """Mark deliveries processed, all or none (an unknown seq fails the call), durable on
        return; several calls at once share one commit. Marking one again moves it to its
        new outcome. `lazily`: return at once and commit with the next group (for deliveries
        that changed nothing: lost in a crash, they are handled again the same way)."""
        now = self._db.clock()
        marks = [(int(seq), outcome or "") for seq, outcome in outcomes]

        def mark(conn: sqlite3.Connection) -> None:
            tally: Counter[str] = Counter()
            for seq, outcome in marks:
                if conn.execute("DELETE FROM delivery_pending WHERE seq = ?",
                                (seq,)).rowcount == 0:
                    before = conn.execute("SELECT outcome FROM delivery_outcomes WHERE seq = ?",
                                          (seq,)).fetchone()
                    if before is None:
                        raise StoreError(f"no delivery {seq}")
                    tally[before[0]] -= 1
                conn.execute("INSERT OR REPLACE INTO delivery_outcomes (seq, processed_at, "
                             "outcome) VALUES (?, ?, ?)", (seq, now, outcome))
                tally[outcome] += 1
            for outcome, n in tally.items():
                if n:
                    conn.execute("INSERT INTO delivery_tally (outcome, n) VALUES (?, ?) "
                                 "ON CONFLICT (outcome) DO UPDATE SET n = n + excluded.n",
                                 (outcome, n))
        if lazily:
            self._writer.submit_lazy(mark)
        else:
            self._writer.submit(mark)

    def delivery_counts(self) -> dict[str, int]:
        """Processed deliveries by outcome, ever (pruning does not lower them): read from
        `delivery_tally`, one row per outcome, so `/metrics` never scans the deliveries.
        Pending ones are `pending_delivery_count`."""
        return {r[0]: r[1] for r in self._db.rows(
            "SELECT outcome, n FROM delivery_tally WHERE n > 0")}

    def pending_delivery_count(self) -> int:
        """Deliveries stored but not yet processed (counted on their own small table)."""
        return self._db.rows("SELECT COUNT(*) FROM delivery_pending")[0][0]

    def prune_deliveries(self) -> int:
        """Delete up to `PRUNE_BATCH` processed deliveries older than the retention period,
        in one short transaction; returns how many. The writer thread does this by itself
        when idle; pending deliveries are never pruned."""
        if self._retention is None:
            return 0
        cutoff = self._db.clock() - self._retention
        return self._writer.submit(lambda conn: self._prune(conn, cutoff, PRUNE_BATCH))

    @staticmethod
    def _prune(conn: sqlite3.Connection, cutoff: float, limit: int) -> int:
        # the oldest processed ones first, by seq (no index on processed_at to keep up on each
        # mark); processing follows arrival order, so a delivery processed late holds back
        # only the few behind it, until it is old enough too
        old = []
        for seq, processed_at in conn.execute(
                "SELECT seq, processed_at FROM delivery_outcomes ORDER BY seq LIMIT ?",
                (limit,)).fetchall():
            if processed_at >= cutoff:
                break
            old.append(seq)
        if not old:
            return 0
        conn.execute("DELETE FROM deliveries WHERE seq IN "
                     "(SELECT seq FROM delivery_outcomes WHERE seq <= ?)", (old[-1],))
        conn.execute("DELETE FROM delivery_outcomes WHERE seq <= ?", (old[-1],))
        return len(old)

    def _idle(self) -> float | None:
        """The writer's idle step: one pruning batch when one is due."""
        if self._retention is None:
            return None
        now = time.monotonic()
        if now < self._next_prune:
            return self._next_prune - now
        cutoff = self._db.clock() - self._retention
        oldest = self._db.rows("SELECT processed_at FROM delivery_outcomes ORDER BY seq LIMIT 1")
        pruned = 0
        if oldest and oldest[0][0] < cutoff:  # a write transaction only when one is due
            with self._db.atomic() as conn:
                pruned = self._prune(conn, cutoff, PRUNE_BATCH)
        # a full batch: more may be due, go on at the next idle moment
        self._next_prune = now if pruned == PRUNE_BATCH else now + PRUNE_EVERY
        return self._next_prune - now
