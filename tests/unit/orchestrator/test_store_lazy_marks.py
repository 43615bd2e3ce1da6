"""Lazy marks: a mark of a delivery that changed nothing waits (at most `LAZY_DELAY`) for the
next group commit instead of paying an fsync of its own, is written on close, and the
dispatcher does not read a lazily marked delivery again before its mark commits. Real SQLite
files; commits are counted by the WAL's frames another connection sees."""

from __future__ import annotations

import sqlite3
import threading
import unittest

from bot_bottle.orchestrator import store_writer

from .test_http_loop_store import StoreCase


class LazyMarkTest(StoreCase):
    def pending_seen_by_another_connection(self) -> list[int]:
        conn = sqlite3.connect(self.path)
        try:
            return [r[0] for r in conn.execute("SELECT seq FROM delivery_pending ORDER BY seq")]
        finally:
            conn.close()

    def record(self, delivery_id: str) -> int:
        self.store.record_delivery(delivery_id, "issue_comment", delivery_id.encode(), 0.0)
        return [d.seq for d in self.store.pending_deliveries(100)
                if d.delivery_id == delivery_id][0]

    def test_a_lazy_mark_rides_with_the_next_group(self) -> None:
        writer = self.store._deliveries._writer
        hold, held = threading.Event(), threading.Event()

        def block(conn) -> None:  # keeps the writer busy, so the lazy mark cannot go alone
            held.set()
            hold.wait(10)
        first = self.record("d1")
        writer.submit_async(block, lambda result, error: None)
        self.assertTrue(held.wait(10))
        self.store.mark_deliveries_processed([(first, "ignored")], lazily=True)
        self.assertEqual(self.pending_seen_by_another_connection(), [first])
        hold.set()
        self.record("d2")  # a group that commits anyway carries the mark
        self.assertEqual(len(self.pending_seen_by_another_connection()), 1)
        self.assertNotIn(first, self.pending_seen_by_another_connection())
        self.assertEqual(self.store.delivery_counts().get("ignored"), 1)

    def test_alone_it_goes_after_the_delay_and_on_close(self) -> None:
        seq = self.record("d1")
        done = threading.Event()
        writer = self.store._deliveries._writer
        self.store.mark_deliveries_processed([(seq, "ignored")], lazily=True)
        # no other write comes: the writer's wait ends at the mark's deadline
        writer.submit_lazy(lambda conn: None, committed=done.set)
        self.assertTrue(done.wait(store_writer.LAZY_DELAY * 40))
        self.assertEqual(self.pending_seen_by_another_connection(), [])
        other = self.record("d2")
        self.store.mark_deliveries_processed([(other, "ignored")], lazily=True)
        self.store.close()
        self.assertEqual(self.pending_seen_by_another_connection(), [])

    def test_pending_after_a_seq_skips_what_was_handled(self) -> None:
        a, b, c = (self.record(f"d{i}") for i in range(3))
        self.assertEqual([d.seq for d in self.store.pending_deliveries(10, after=a)], [b, c])


if __name__ == "__main__":
    unittest.main()
