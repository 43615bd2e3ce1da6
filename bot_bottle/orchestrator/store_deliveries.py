"""Webhook deliveries in the store: `record_delivery` with group commit (callers enqueue; one
writer thread inserts everything queued in one transaction, commits once — one fsync for
many deliveries — and wakes each caller with its own answer), and the dispatcher's side:
pending deliveries in arrival order, marking them processed, and the counts `/metrics`
shows. Works through the shared `StoreDb` it is given.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from typing import Iterable

from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_rows import StoredDelivery, StoreError

log = logging.getLogger("bot_bottle.orchestrator.store")


def _is_busy(exc: BaseException | None) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Pending:
    """One caller's delivery waiting for the writer thread."""

    __slots__ = ("args", "done", "result", "error")

    def __init__(self, args: tuple) -> None:
        self.args = args
        self.done = threading.Event()
        self.result = False
        self.error: BaseException | None = None


class Deliveries:
    def __init__(self, db: StoreDb) -> None:
        self._db = db
        self._outcomes: dict[str, int] | None = None  # see `delivery_counts`
        self._queue: list[_Pending] = []
        self._queue_cond = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._writer_loop, name="store-writer",
                                        daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write what is queued and stop the writer thread. Idempotent."""
        with self._queue_cond:
            self._closing = True
            self._queue_cond.notify_all()
        self._writer.join()

    def record_delivery(self, delivery_id: str | None, event_type: str, body: bytes,
                        received_at: float, comment_key: str | None = None) -> bool:
        """Store a webhook delivery durably; False if it is a duplicate (same delivery id,
        same event type and body, or same `comment_key` — a comment's id and edit time,
        whatever its event type header said). An empty delivery id is stored as NULL."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("event_type must be a non-empty string")
        body = bytes(body)
        item = _Pending((delivery_id or None, event_type, body,
                         hashlib.sha256(body).hexdigest(), float(received_at),
                         comment_key or None))
        with self._queue_cond:
            if self._closing:
                raise StoreError("store is closed")
            self._queue.append(item)
            self._queue_cond.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def _writer_loop(self) -> None:
        while True:
            with self._queue_cond:
                while not self._queue and not self._closing:
                    self._queue_cond.wait()
                if not self._queue:  # closing, and everything queued is written
                    return
                batch, self._queue = self._queue, []
            try:
                self._write_batch(batch)
            except Exception:  # a bug here must not stop the writer; callers get an error
                log.exception("store: delivery batch failed")
            finally:
                for item in batch:
                    if not item.done.is_set():
                        item.error = StoreError("delivery was not recorded")
                        item.done.set()

    def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            with self._db.atomic() as conn:
                results = [conn.execute(
                    "INSERT OR IGNORE INTO deliveries "
                    "(delivery_id, event_type, body, body_sha256, received_at, comment_key) "
                    "VALUES (?, ?, ?, ?, ?, ?)", item.args).rowcount == 1 for item in batch]
        except StoreError as exc:
            if len(batch) > 1 and not _is_busy(exc.__cause__):
                # one bad row (say, too big for the disk) must not fail its neighbours
                for item in batch:
                    self._write_batch([item])
                return
            for item in batch:
                item.error = StoreError(str(exc))
                item.error.__cause__ = exc.__cause__
                item.done.set()
            return
        for item, result in zip(batch, results):
            item.result = result
            item.done.set()

    def pending_deliveries(self, limit: int) -> list[StoredDelivery]:
        rows = self._db.rows("SELECT seq, delivery_id, event_type, body, received_at FROM deliveries "
                          "WHERE processed_at IS NULL ORDER BY seq LIMIT ?", (limit,))
        return [StoredDelivery(r["seq"], r["delivery_id"], r["event_type"], bytes(r["body"]),
                               r["received_at"]) for r in rows]

    def mark_delivery_processed(self, seq: int, outcome: str) -> None:
        self.mark_deliveries_processed([(seq, outcome)])

    def mark_deliveries_processed(self, outcomes: Iterable[tuple[int, str]]) -> None:
        """Several in one transaction (one fsync): for deliveries whose handling changed
        nothing, so a crash before this commit only repeats harmless work."""
        now = self._db.clock()
        try:
            self._mark(now, outcomes)
        except BaseException:
            self._outcomes = None  # the commit may have failed after the tally: count afresh
            raise

    def _mark(self, now: float, outcomes: Iterable[tuple[int, str]]) -> None:
        with self._db.atomic() as conn:
            moved: list[tuple[str | None, str]] = []  # (outcome before or None, after)
            for seq, outcome in outcomes:
                before = conn.execute("SELECT processed_at IS NOT NULL, COALESCE(outcome, '') "
                                      "FROM deliveries WHERE seq = ?", (seq,)).fetchone()
                if before is None:
                    raise StoreError(f"no delivery {seq}")
                conn.execute("UPDATE deliveries SET processed_at = ?, outcome = ? "
                             "WHERE seq = ?", (now, outcome, seq))
                moved.append((before[1] if before[0] else None, outcome or ""))
            # under the writer lock, so `delivery_counts` never sees a commit without its tally
            self._tally(moved)

    def _tally(self, moved: list[tuple[str | None, str]]) -> None:
        if self._outcomes is None:
            return
        for before, after in moved:
            if before is not None:
                self._outcomes[before] -= 1
            self._outcomes[after] = self._outcomes.get(after, 0) + 1

    def delivery_counts(self) -> dict[str, int]:
        """Processed deliveries by outcome. Counted from the table once (under the writer
        lock), then kept in memory as deliveries are marked: `/metrics` must not scan every
        delivery on each scrape. Pending ones are `pending_delivery_count`."""
        with self._db.lock:
            if self._outcomes is None:
                rows = self._db.writer_rows(
                    "SELECT COALESCE(outcome, ''), COUNT(*) FROM deliveries "
                    "WHERE processed_at IS NOT NULL GROUP BY 1")
                self._outcomes = {k: n for k, n in rows}
            return {k: n for k, n in self._outcomes.items() if n}

    def pending_delivery_count(self) -> int:
        """Deliveries stored but not yet processed (counted on the partial index)."""
        return self._db.rows("SELECT COUNT(*) FROM deliveries WHERE processed_at IS NULL")[0][0]
