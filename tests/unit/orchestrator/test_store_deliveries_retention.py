"""Processed deliveries pruned after the retention period (`FORGE_DELIVERY_RETENTION_DAYS`),
on real SQLite files with the clock injected: by age, in small batches, by the writer thread
on its own; pending ones never; dedupe within the window; `/metrics`' counts unchanged."""

from __future__ import annotations

import sqlite3
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.orchestrator import store_deliveries
from bot_bottle.orchestrator.config import Config, ConfigError
from bot_bottle.orchestrator.store import SqliteRunStore

from ._fakes import FakeClock

DAY = 86400.0


class RetentionTestCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.path = Path(tmp.name) / "orchestrator.db"
        self.clock = FakeClock()
        self.store = self.open()

    def open(self, **kwargs) -> SqliteRunStore:
        kwargs.setdefault("delivery_retention", 10 * DAY)
        store = SqliteRunStore(self.path, clock=self.clock.now, **kwargs)
        self.addCleanup(store.close)
        return store

    def stored(self) -> int:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
        finally:
            conn.close()

    def deliver(self, n: int, outcome: str | None = "ignored", prefix: str = "d") -> list[int]:
        for i in range(n):
            self.store.record_delivery(f"{prefix}{i}", "issues", f"{prefix}{i}".encode(),
                                       self.clock.now())
        seqs = [d.seq for d in self.store.pending_deliveries(n + 1000)][-n:]
        if outcome is not None:
            self.store.mark_deliveries_processed([(s, outcome) for s in seqs])
        return seqs


class PruneTest(RetentionTestCase):
    def test_processed_deliveries_past_the_retention_go_pending_ones_stay(self) -> None:
        self.deliver(2, "launched")
        pending = self.deliver(1, None, prefix="p")
        self.clock.advance(9 * DAY)
        self.deliver(1, "ignored", prefix="young")
        self.assertEqual(self.store.prune_deliveries(), 0)  # nothing is ten days old yet
        self.clock.advance(1 * DAY + 1)
        self.assertEqual(self.store.prune_deliveries(), 2)
        self.assertEqual(self.stored(), 2)  # the pending one and the young one
        self.assertEqual([d.seq for d in self.store.pending_deliveries(10)], pending)
        self.clock.advance(30 * DAY)
        self.assertEqual(self.store.prune_deliveries(), 1)
        self.assertEqual([d.seq for d in self.store.pending_deliveries(10)], pending)

    def test_the_counts_metrics_show_do_not_drop_with_pruning(self) -> None:
        self.deliver(3, "launched")
        self.deliver(2, "ignored", prefix="i")
        self.clock.advance(11 * DAY)
        self.assertEqual(self.store.prune_deliveries(), 5)
        self.assertEqual(self.stored(), 0)
        self.assertEqual(self.store.delivery_counts(), {"launched": 3, "ignored": 2})
        self.store.close()
        self.assertEqual(self.open().delivery_counts(), {"launched": 3, "ignored": 2})

    def test_a_redelivery_within_the_window_is_a_duplicate_after_it_new(self) -> None:
        self.deliver(1, "launched")
        self.clock.advance(5 * DAY)
        self.store.prune_deliveries()
        self.assertFalse(self.store.record_delivery("d0", "issues", b"resent", 1.0))
        self.assertFalse(self.store.record_delivery("x", "issues", b"d0", 1.0))  # same body
        self.clock.advance(6 * DAY)
        self.assertEqual(self.store.prune_deliveries(), 1)
        self.assertTrue(self.store.record_delivery("d0", "issues", b"d0", 1.0))

    def test_pruning_goes_in_small_batches_each_its_own_short_transaction(self) -> None:
        n = store_deliveries.PRUNE_BATCH * 2 + 7
        self.deliver(n)
        self.clock.advance(11 * DAY)
        before = self.store.commit_count
        done = [self.store.prune_deliveries() for _ in range(4)]
        self.assertEqual(done, [store_deliveries.PRUNE_BATCH, store_deliveries.PRUNE_BATCH, 7, 0])
        self.assertEqual(self.store.commit_count - before, 4)  # one short transaction each
        self.assertEqual(self.stored(), 0)

    def test_no_retention_keeps_everything(self) -> None:
        self.store.close()
        self.store = self.open(delivery_retention=None)
        self.deliver(3)
        self.clock.advance(10_000 * DAY)
        self.assertEqual(self.store.prune_deliveries(), 0)
        self.assertEqual(self.stored(), 3)
        with self.assertRaises(ValueError):
            self.open(delivery_retention=0)

    def test_the_writer_prunes_by_itself_when_idle(self) -> None:
        n = store_deliveries.PRUNE_BATCH + 30  # more than one batch
        self.deliver(n)
        self.deliver(1, None, prefix="p")
        self.store.close()
        self.clock.advance(11 * DAY)
        self.store = self.open()  # its writer thread looks as soon as it starts
        deadline = time.monotonic() + 10
        while self.stored() > 1:
            self.assertLess(time.monotonic(), deadline, "the writer never pruned")
            time.sleep(0.01)
        self.assertEqual([d.delivery_id for d in self.store.pending_deliveries(10)], ["p0"])
        self.assertEqual(self.store.delivery_counts(), {"ignored": n})


class RetentionSettingTest(unittest.TestCase):
    REQUIRED = {"FORGE_GITEA_URL": "https://git.example.com", "FORGE_TOKEN": "t",
                "FORGE_AGENT_ORG": "agents", "FORGE_WEBHOOK_SECRET": "s",
                "BOT_BOTTLE_HOME": "/tmp/bb"}

    def test_fourteen_days_unless_set_and_a_bad_value_is_named(self) -> None:
        self.assertEqual(Config.from_env(self.REQUIRED).delivery_retention_days, 14)
        self.assertEqual(Config.from_env({**self.REQUIRED, "FORGE_DELIVERY_RETENTION_DAYS": "3"})
                         .delivery_retention_days, 3)
        for bad in ("0", "-1", "1.5", "forever", "3651"):
            with self.subTest(bad=bad), self.assertRaises(ConfigError) as caught:
                Config.from_env({**self.REQUIRED, "FORGE_DELIVERY_RETENTION_DAYS": bad})
            self.assertIn("FORGE_DELIVERY_RETENTION_DAYS", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
