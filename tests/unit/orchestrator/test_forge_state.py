"""SqliteForgeStateStore: get/put/delete/all, persistence, threads, shared-DB schema."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
import threading
import unittest
from pathlib import Path

from bot_bottle.contrib.gitea.forge_state import (SCHEMA_VERSION, ForgeState, SqliteForgeStateStore,
                                                  apply_schema)


def st(n: int, **kw) -> ForgeState:
    base = dict(owner="acme", repo="widgets", issue_number=n, pr_number=None, agent="claude",
                bottles=("dev",), slug=f"s{n}", state="running", created_at="t0", updated_at="t0")
    base.update(kw)
    return ForgeState(**base)


class ForgeStateTests(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)  # runs last: after every connection below is closed
        self.path = Path(tmp.name) / "db.sqlite"
        self.store = SqliteForgeStateStore(self.path)
        self.addCleanup(self.store.close)

    def test_put_get_delete_all(self):
        self.assertIsNone(self.store.get("acme", "widgets", 1))
        self.store.put(st(1))
        self.store.put(st(2, pr_number=5, last_done_status="done", last_done_summary="ok"))
        self.assertEqual(self.store.get("acme", "widgets", 2).pr_number, 5)
        self.store.put(st(1, state="frozen"))
        self.assertEqual([s.state for s in self.store.all()], ["frozen", "running"])
        self.assertTrue(self.store.delete("acme", "widgets", 1))
        self.assertFalse(self.store.delete("acme", "widgets", 1))
        self.assertEqual(self.store.all(), [st(2, pr_number=5, last_done_status="done",
                                               last_done_summary="ok")])

    def test_persists_across_reopen_with_wal(self):
        self.store.put(st(7, bottles=("a", "b")))
        again = SqliteForgeStateStore(self.path)
        self.addCleanup(again.close)
        self.assertEqual(again.get("acme", "widgets", 7), st(7, bottles=("a", "b")))
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_concurrent_threads(self):
        def work(k):
            for i in range(20):
                self.store.put(st(k * 100 + i))
                self.store.get("acme", "widgets", k * 100 + i)
        ts = [threading.Thread(target=work, args=(k,)) for k in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len(self.store.all()), 100)

    def test_shared_connection_without_migrate(self):
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.addCleanup(conn.close)
        apply_schema(conn)
        s = SqliteForgeStateStore(conn, migrate=False)
        s.put(st(3))
        self.assertEqual(s.get("acme", "widgets", 3), st(3))
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], 0)

    def test_migrations_set_user_version_and_reopen_keeps_data(self):
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
        self.store.put(st(1))
        for _ in range(2):
            again = SqliteForgeStateStore(self.path)
            self.addCleanup(again.close)
            self.assertEqual(again.get("acme", "widgets", 1), st(1))

    def test_a_db_at_version_zero_is_migrated(self):
        path = self.path.with_name("old.sqlite")
        sqlite3.connect(path).close()
        s = SqliteForgeStateStore(path)
        self.addCleanup(s.close)
        s.put(st(4))
        self.assertEqual(s.all(), [st(4)])

    def test_key_is_owner_repo_and_issue(self):
        self.store.put(st(1))
        self.store.put(st(1, repo="gadgets", slug="g1"))
        self.store.put(st(1, owner="other", slug="o1"))
        self.assertEqual(len(self.store.all()), 3)
        self.assertEqual(self.store.get("acme", "gadgets", 1).slug, "g1")
        self.assertTrue(self.store.delete("acme", "gadgets", 1))
        self.assertEqual({(s.owner, s.repo) for s in self.store.all()}, {("acme", "widgets"), ("other", "widgets")})

    def test_state_is_a_frozen_dataclass_with_every_field(self):
        self.assertEqual([f.name for f in dataclasses.fields(ForgeState)],
                         ["owner", "repo", "issue_number", "pr_number", "agent", "bottles", "slug", "state",
                          "created_at", "updated_at", "last_done_status", "last_done_summary"])
        with self.assertRaises(dataclasses.FrozenInstanceError):
            st(1).state = "x"

    def test_concurrent_writers_on_two_stores_of_one_file(self):
        other = SqliteForgeStateStore(self.path)
        self.addCleanup(other.close)

        def work(store, base):
            for i in range(25):
                store.put(st(base + i))
        ts = [threading.Thread(target=work, args=(s, b)) for s, b in ((self.store, 0), (other, 100))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len(self.store.all()), 50)
