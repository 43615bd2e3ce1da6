"""The store's two small queues: done events relayed from the sidecar (recorded with their
relay cursor in one transaction, so a restart neither loses nor repeats one) and the comment
outbox (comments that must reach the forge even while it is down). Each works through the
shared `StoreDb` it is given.
"""

from __future__ import annotations

from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_rows import DoneEvent, OutboxItem, StoreError


class DoneEvents:
    def __init__(self, db: StoreDb) -> None:
        self._db = db

    def record_done_event(self, source: str, run_id: int, status: str, summary: str, now: float,
                          cursor_name: str, cursor_value: str) -> bool:
        """Record a relayed done signal and advance the relay cursor atomically; False (and
        nothing changed) if `source` was recorded before."""
        with self._db.atomic() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO done_events (source, run_id, status, "
                               "summary, at) VALUES (?, ?, ?, ?, ?)",
                               (source, run_id, status, summary, now))
            if cur.rowcount == 0:
                return False
            conn.execute("INSERT INTO relay_cursor (name, value) VALUES (?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                         (cursor_name, cursor_value))
            return True

    def pending_done_events(self, run_id: int | None = None) -> list[DoneEvent]:
        """Unprocessed done events in arrival order; only `run_id`'s when given."""
        where, params = ("AND run_id = ?", (run_id,)) if run_id is not None else ("", ())
        rows = self._db.rows("SELECT id, source, run_id, status, summary, at FROM done_events "
                          f"WHERE processed_at IS NULL {where} ORDER BY id", params)
        return [DoneEvent(*r) for r in rows]

    def done_event_pending(self, event_id: int) -> bool:
        """False once processed (or unknown): two threads may hold the same pending event."""
        return bool(self._db.rows("SELECT 1 FROM done_events WHERE id = ? AND processed_at IS NULL",
                               (event_id,)))

    def mark_done_processed(self, event_id: int) -> None:
        with self._db.atomic() as conn:
            cur = conn.execute("UPDATE done_events SET processed_at = ? WHERE id = ?",
                               (self._db.clock(), event_id))
            if cur.rowcount == 0:
                raise StoreError(f"no done event {event_id}")

    def relay_cursor(self, name: str) -> str:
        rows = self._db.rows("SELECT value FROM relay_cursor WHERE name = ?", (name,))
        return rows[0]["value"] if rows else ""


class Outbox:
    def __init__(self, db: StoreDb) -> None:
        self._db = db

    def outbox_pending_count(self) -> int:
        """Comments not yet sent nor dropped (counted on the `outbox_due` partial index)."""
        return self._db.rows("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL "
                             "AND dropped_at IS NULL")[0][0]

    def enqueue_comment(self, run_id: int | None, owner: str, repo: str, number: int,
                        body: str, now: float) -> int:
        """Queue a comment to post; `run_id` None for a reply about an issue with no run."""
        with self._db.atomic() as conn:
            return conn.execute(
                "INSERT INTO outbox (run_id, owner, repo, number, body, created_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, owner, repo, number, body, now, now)).lastrowid

    def due_outbox(self, now: float) -> list[OutboxItem]:
        """Unsent comments whose next attempt is due, oldest first (comments keep their order)."""
        rows = self._db.rows("SELECT id, run_id, owner, repo, number, body, attempts, "
                          "posting_at IS NOT NULL FROM outbox "
                          "WHERE sent_at IS NULL AND dropped_at IS NULL AND next_attempt_at <= ? "
                          "ORDER BY id", (now,))
        return [OutboxItem(*r[:7], posting=bool(r[7])) for r in rows]

    def mark_outbox_posting(self, item_id: int, now: float) -> None:
        """Durably noted before the POST, so after a timeout or a crash the sender looks for
        the comment before posting it again."""
        self._outbox_update("UPDATE outbox SET posting_at = ? WHERE id = ?", (now, item_id))

    def mark_outbox_sent(self, item_id: int, now: float) -> None:
        self._outbox_update("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?",
                            (now, item_id))

    def mark_outbox_retry(self, item_id: int, next_attempt_at: float, error: str) -> None:
        self._outbox_update("UPDATE outbox SET next_attempt_at = ?, last_error = ?, "
                            "attempts = attempts + 1 WHERE id = ?",
                            (next_attempt_at, error, item_id))

    def mark_outbox_dropped(self, item_id: int, now: float, error: str) -> None:
        """A comment the forge will never take (the issue is gone, the body refused): kept
        for the record, never retried."""
        self._outbox_update("UPDATE outbox SET dropped_at = ?, last_error = ?, "
                            "attempts = attempts + 1 WHERE id = ?", (now, error, item_id))

    def _outbox_update(self, sql: str, params: tuple) -> None:
        with self._db.atomic() as conn:
            if conn.execute(sql, params).rowcount == 0:
                raise StoreError(f"no outbox item {params[-1]}")
