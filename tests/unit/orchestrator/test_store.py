"""SqliteRunStore against real SQLite files in a temp dir: migrations, group-committed
deliveries under concurrency and failure, runs and their transitions, done events with the
relay cursor across restarts, the outbox, and health."""

from __future__ import annotations

import gc
import sqlite3
import tempfile
import threading
import unittest
from pathlib import Path

from bot_bottle.contrib.gitea import forge_state
from bot_bottle.contrib.gitea.forge_state import ForgeState
from bot_bottle.orchestrator import store_schema
from bot_bottle.orchestrator.model import IllegalTransition, OrchestratorError, RunState
from bot_bottle.orchestrator.store import (
    LiveRunExists,
    RunNotFound,
    SqliteRunStore,
    StoreError,
)

from ._fakes import FakeClock, seed_run


class StoreTestCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.path = self.dir / "sub" / "orchestrator.db"
        self.clock = FakeClock()
        self.store = self.open()

    def open(self, target=None, **kwargs) -> SqliteRunStore:
        store = SqliteRunStore(target or self.path, clock=self.clock.now, **kwargs)
        self.addCleanup(store.close)
        return store

    def reopen(self) -> SqliteRunStore:
        self.store.close()
        self.store = self.open()
        return self.store

    def raw(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(conn.close)
        return conn


class MigrationTest(StoreTestCase):
    def test_opening_creates_the_parent_dir_a_wal_file_and_every_table(self) -> None:
        conn = self.raw()
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertLessEqual({"deliveries", "runs", "op_log", "done_events", "relay_cursor",
                              "outbox"}, tables)

    def test_migrations_apply_once_and_reopening_is_a_no_op(self) -> None:
        self.store.record_delivery("d1", "issues", b"{}", 1.0)
        self.reopen()
        self.reopen()
        self.assertEqual(self.store.schema_version, len(store_schema.MIGRATIONS))
        self.assertEqual(self.raw().execute("PRAGMA user_version").fetchone()[0],
                         len(store_schema.MIGRATIONS))
        self.assertEqual([d.delivery_id for d in self.store.pending_deliveries(10)], ["d1"])

    def test_version_2_keeps_launch_prompts_and_moves_a_queued_runs_prompt_there(self) -> None:
        self.store.close()
        old = self.dir / "v1.db"
        conn = sqlite3.connect(old, isolation_level=None)
        store_schema._v1(conn)
        conn.execute("PRAGMA user_version = 1")
        for issue, state, prompt in ((1, "queued", "launch me"), (2, "frozen", "a comment")):
            conn.execute("INSERT INTO runs (owner, repo, issue_number, agent, bottles, state, "
                         "created_at, updated_at, run_token, pending_prompt) "
                         "VALUES ('acme', 'widgets', ?, 'claude', '[]', ?, 0, 0, ?, ?)",
                         (issue, state, f"tok-{issue}", prompt))
        conn.close()
        store = self.open(old)
        self.assertEqual(store.schema_version, len(store_schema.MIGRATIONS))
        queued, frozen = store.list_runs()
        self.assertEqual((queued.launch_prompt, queued.pending_prompt), ("launch me", None))
        self.assertEqual((frozen.launch_prompt, frozen.pending_prompt), (None, "a comment"))

    def test_version_3_keeps_stored_deliveries_and_adds_comment_dedupe(self) -> None:
        self.store.close()
        old = self.dir / "v2.db"
        conn = sqlite3.connect(old, isolation_level=None)
        store_schema._v1(conn)
        store_schema._v2(conn)
        conn.execute("PRAGMA user_version = 2")
        conn.execute("INSERT INTO deliveries (delivery_id, event_type, body, body_sha256, "
                     "received_at) VALUES ('d1', 'issues', x'7b7d', 'h', 1.0)")
        conn.close()
        store = self.open(old)
        self.assertEqual([d.delivery_id for d in store.pending_deliveries(10)], ["d1"])
        self.assertTrue(store.record_delivery("d2", "issue_comment", b"a", 2.0, comment_key="k"))
        self.assertFalse(store.record_delivery("d3", "pull_request_comment", b"a", 3.0,
                                               comment_key="k"))

    def test_a_file_that_is_not_a_database_is_a_store_error(self) -> None:
        junk = self.dir / "junk.db"
        junk.write_bytes(b"not a database at all" * 100)
        with self.assertRaises(StoreError):
            SqliteRunStore(junk)

    def test_store_errors_are_orchestrator_errors(self) -> None:
        self.assertTrue(issubclass(StoreError, OrchestratorError))


class DeliveryTest(StoreTestCase):
    def test_new_delivery_is_recorded_and_pending_in_arrival_order(self) -> None:
        self.assertTrue(self.store.record_delivery("d1", "issues", b'{"a": 1}', 10.0))
        self.assertTrue(self.store.record_delivery("d2", "issue_comment", b'{"a": 2}', 11.0))
        pending = self.store.pending_deliveries(10)
        self.assertEqual([(d.delivery_id, d.event_type, d.body, d.received_at) for d in pending],
                         [("d1", "issues", b'{"a": 1}', 10.0),
                          ("d2", "issue_comment", b'{"a": 2}', 11.0)])
        self.assertLess(pending[0].seq, pending[1].seq)
        self.assertEqual(len(self.store.pending_deliveries(1)), 1)

    def test_same_delivery_id_is_a_duplicate(self) -> None:
        self.assertTrue(self.store.record_delivery("d1", "issues", b"one", 1.0))
        self.assertFalse(self.store.record_delivery("d1", "issues", b"two", 2.0))
        self.assertEqual(len(self.store.pending_deliveries(10)), 1)

    def test_same_event_type_and_body_under_a_new_id_is_a_duplicate(self) -> None:
        self.assertTrue(self.store.record_delivery("d1", "issues", b"same", 1.0))
        self.assertFalse(self.store.record_delivery("d2", "issues", b"same", 2.0))
        self.assertTrue(self.store.record_delivery("d3", "issue_label", b"same", 3.0))
        self.assertEqual([d.delivery_id for d in self.store.pending_deliveries(10)], ["d1", "d3"])

    def test_a_comment_replayed_under_the_other_comment_type_is_a_duplicate(self) -> None:
        key = "comment 5 2026-01-01T00:00:00Z"
        self.assertTrue(self.store.record_delivery("d1", "issue_comment", b"c", 1.0,
                                                   comment_key=key))
        self.assertFalse(self.store.record_delivery("d2", "pull_request_comment", b"c", 2.0,
                                                    comment_key=key))
        self.assertFalse(self.store.record_delivery("d3", "issue_comment", b"c2", 3.0,
                                                    comment_key=key))
        self.assertTrue(self.store.record_delivery("d4", "issue_comment", b"c3", 4.0,
                                                   comment_key="comment 5 2026-01-02T00:00:00Z"))
        self.assertEqual([d.delivery_id for d in self.store.pending_deliveries(10)], ["d1", "d4"])

    def test_deliveries_without_an_id_are_deduplicated_by_body_only(self) -> None:
        self.assertTrue(self.store.record_delivery("", "issues", b"a", 1.0))
        self.assertTrue(self.store.record_delivery(None, "issues", b"b", 1.0))
        self.assertFalse(self.store.record_delivery("", "issues", b"a", 1.0))

    def test_recorded_delivery_survives_a_restart(self) -> None:
        self.store.record_delivery("d1", "issues", b"x", 1.0)
        self.reopen()
        self.assertFalse(self.store.record_delivery("d1", "issues", b"x", 1.0))
        self.assertEqual(self.store.pending_deliveries(10)[0].body, b"x")

    def test_processed_deliveries_leave_the_queue_and_are_counted_by_outcome(self) -> None:
        for i in range(4):
            self.store.record_delivery(f"d{i}", "issues", str(i).encode(), 1.0)
        first, second = self.store.pending_deliveries(2)
        self.store.mark_delivery_processed(first.seq, "launched")
        self.store.mark_delivery_processed(second.seq, "ignored")
        self.assertEqual([d.delivery_id for d in self.store.pending_deliveries(10)], ["d2", "d3"])
        self.assertEqual(self.store.delivery_counts(), {"launched": 1, "ignored": 1})
        self.assertEqual(self.store.pending_delivery_count(), 2)
        with self.assertRaises(StoreError):
            self.store.mark_delivery_processed(999, "x")

    def test_outcome_counts_move_when_marked_again_and_a_failed_batch_counts_nothing(self) -> None:
        for i in range(5):
            self.store.record_delivery(f"d{i}", "issues", str(i).encode(), 1.0)
        a, b, c, d, _ = self.store.pending_deliveries(5)
        self.store.mark_delivery_processed(a.seq, "launched")
        self.assertEqual(self.store.delivery_counts(), {"launched": 1})  # counted from the table
        self.store.mark_deliveries_processed([(b.seq, "ignored"), (c.seq, "launched")])
        self.store.mark_delivery_processed(a.seq, "ignored")  # marked again: moves, not adds
        with self.assertRaises(StoreError):  # nothing of a failed batch is counted
            self.store.mark_deliveries_processed([(d.seq, "launched"), (999, "x")])
        expected = {"launched": 1, "ignored": 2}
        self.assertEqual(self.store.delivery_counts(), expected)
        fresh = SqliteRunStore(self.path)
        self.addCleanup(fresh.close)
        self.assertEqual(fresh.delivery_counts(), expected)
        self.assertEqual(self.store.pending_delivery_count(), 2)

    def test_pending_counts_come_from_the_small_pending_table_and_the_partial_index(self) -> None:
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        for sql, uses in (("SELECT COUNT(*) FROM delivery_pending", r"SCAN delivery_pending"),
                          ("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND "
                           "dropped_at IS NULL", r"USING (COVERING )?INDEX outbox_due")):
            plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            self.assertRegex(plan, uses)

    def test_outbox_pending_counts_comments_neither_sent_nor_dropped(self) -> None:
        ids = [self.store.enqueue_comment(None, "acme", "widgets", 1, f"c{i}", 1.0) for i in range(3)]
        self.assertEqual(self.store.outbox_pending_count(), 3)
        self.store.mark_outbox_sent(ids[0], 2.0)
        self.store.mark_outbox_dropped(ids[1], 2.0, "gone")
        self.assertEqual(self.store.outbox_pending_count(), 1)

    def test_transition_listeners_see_the_run_and_its_old_state(self) -> None:
        seen = []
        self.store.add_transition_listener(lambda run, old: seen.append((old.value, run.state.value)))
        self.store.add_transition_listener(lambda run, old: 1 / 0)  # logged, never raised
        run = self.store.create_run("acme", "widgets", 1, "claude", (), RunState.QUEUED, "t1", 1.0)
        with self.assertLogs("bot_bottle.orchestrator.store", "ERROR"):
            self.store.transition(run.id, RunState.FAILED, now=2.0, reason="x")
        self.assertEqual(seen, [("queued", "failed")])

    def test_several_deliveries_are_marked_in_one_commit_or_none(self) -> None:
        for i in range(3):
            self.store.record_delivery(f"d{i}", "issues", str(i).encode(), 1.0)
        seqs = [d.seq for d in self.store.pending_deliveries(3)]
        before = self.store.commit_count
        self.store.mark_deliveries_processed([(seqs[0], "ignored"), (seqs[1], "bad_shape")])
        self.assertEqual(self.store.commit_count - before, 1)
        self.assertEqual([d.seq for d in self.store.pending_deliveries(10)], [seqs[2]])
        with self.assertRaises(StoreError):  # one unknown seq rolls the whole batch back
            self.store.mark_deliveries_processed([(seqs[2], "ignored"), (999, "ignored")])
        self.assertEqual([d.seq for d in self.store.pending_deliveries(10)], [seqs[2]])

    def test_concurrent_deliveries_are_each_recorded_once_in_fewer_commits(self) -> None:
        threads, per_thread = 16, 20
        results: dict[str, list[bool]] = {}
        start = threading.Barrier(threads)

        def deliver(t: int) -> None:
            start.wait()
            mine = results.setdefault(str(t), [])
            for i in range(per_thread):
                body = f"{t}/{i}".encode()
                mine.append(self.store.record_delivery(f"{t}-{i}", "issues", body, 1.0))
                # every other delivery is resent, as Gitea does after a timeout
                if i % 2:
                    mine.append(self.store.record_delivery(f"{t}-{i}", "issues", b"resent", 1.0))

        before = self.store.commit_count
        workers = [threading.Thread(target=deliver, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        total = threads * per_thread
        flat = [r for rs in results.values() for r in rs]
        self.assertEqual((flat.count(True), flat.count(False)), (total, total // 2))
        ids = [d.delivery_id for d in self.store.pending_deliveries(total + 1)]
        self.assertEqual(sorted(ids),
                         sorted(f"{t}-{i}" for t in range(threads) for i in range(per_thread)))
        commits = self.store.commit_count - before
        self.assertLess(commits, total + total // 2, "deliveries were not group-committed")

    def test_a_locked_database_is_a_store_error_and_the_writer_serves_afterwards(self) -> None:
        store = self.open(busy_timeout=0.05)
        blocker = self.raw()
        blocker.execute("BEGIN EXCLUSIVE")
        with self.assertRaises(StoreError) as caught:
            store.record_delivery("d1", "issues", b"x", 1.0)
        self.assertIsInstance(caught.exception.__cause__, sqlite3.OperationalError)
        blocker.execute("ROLLBACK")
        self.assertTrue(store.record_delivery("d1", "issues", b"x", 1.0))

    def test_a_full_database_is_a_store_error_and_the_writer_serves_afterwards(self) -> None:
        self.store.close()
        store = self.open(max_pages=64)
        with self.assertRaises(StoreError) as caught:
            store.record_delivery("big", "issues", b"x" * (1 << 20), 1.0)
        self.assertEqual(caught.exception.__cause__.sqlite_errorcode, sqlite3.SQLITE_FULL)
        self.assertTrue(store.record_delivery("small", "issues", b"y", 1.0))
        self.assertEqual([d.delivery_id for d in store.pending_deliveries(10)], ["small"])

    def test_a_row_too_big_for_the_disk_does_not_fail_the_rows_batched_with_it(self) -> None:
        self.store.close()
        store = self.open(max_pages=64)
        outcomes: dict[str, object] = {}
        start = threading.Barrier(8)

        def deliver(name: str, body: bytes) -> None:
            start.wait()
            try:
                outcomes[name] = store.record_delivery(name, "issues", body, 1.0)
            except StoreError as exc:
                outcomes[name] = exc
        workers = [threading.Thread(target=deliver, args=(f"s{i}", str(i).encode()))
                   for i in range(7)]
        workers.append(threading.Thread(target=deliver, args=("big", b"x" * (1 << 20))))
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        self.assertIsInstance(outcomes.pop("big"), StoreError)
        self.assertEqual(outcomes, {f"s{i}": True for i in range(7)})

    def test_a_read_only_database_is_a_store_error_on_every_write_not_a_hang(self) -> None:
        self.store.record_delivery("d1", "issues", b"x", 1.0)
        self.store.close()
        ro = self.open(f"file:{self.path}?mode=ro")
        for attempt in ("d2", "d3"):
            with self.subTest(attempt=attempt), self.assertRaises(StoreError):
                ro.record_delivery(attempt, "issues", attempt.encode(), 1.0)
        with self.assertRaises(StoreError):
            ro.create_run("acme", "widgets", 1, "claude", (), RunState.QUEUED, "t", 1.0)
        self.assertEqual([d.delivery_id for d in ro.pending_deliveries(10)], ["d1"])
        self.assertTrue(ro.ping())

    def test_recording_after_close_is_a_store_error(self) -> None:
        self.store.close()
        with self.assertRaises(StoreError):
            self.store.record_delivery("d1", "issues", b"x", 1.0)


class RunTest(StoreTestCase):
    def create(self, issue: int = 1, state: RunState = RunState.QUEUED, token: str | None = None):
        return self.store.create_run("acme", "widgets", issue, "claude", ("py", "node"), state,
                                     token or f"tok-{issue}", 100.0)

    def test_created_run_reads_back_and_is_logged(self) -> None:
        run = self.create()
        self.assertEqual(self.store.get_run(run.id), run)
        self.assertEqual((run.bottles, run.state, run.created_at, run.updated_at, run.run_token),
                         (("py", "node"), RunState.QUEUED, 100.0, 100.0, "tok-1"))
        [entry] = self.store.op_log(run.id)
        self.assertEqual((entry.kind, entry.detail["state"], entry.at),
                         ("created", "queued", 100.0))
        self.assertNotIn("tok-1", str(entry.detail))
        self.assertIsNone(self.store.get_run(run.id + 1))

    def test_a_launch_prompt_is_stored_with_the_run_and_kept_out_of_its_repr(self) -> None:
        run = self.store.create_run("acme", "widgets", 1, "claude", (), RunState.STARTING,
                                    "tok-1", 100.0, launch_prompt="acme/widgets#1: fix it")
        self.assertEqual(self.store.get_run(run.id).launch_prompt, "acme/widgets#1: fix it")
        self.assertNotIn("fix it", repr(run))
        run = self.store.transition(run.id, RunState.RUNNING, now=101.0, reason="started",
                                    slug="acme-widgets-1", launch_prompt=None)
        self.assertIsNone(self.store.get_run(run.id).launch_prompt)

    def test_second_live_run_for_an_issue_is_refused_until_the_first_is_destroyed(self) -> None:
        first = self.create()
        with self.assertRaises(LiveRunExists):
            self.create(token="other")
        self.assertIsInstance(LiveRunExists("x"), StoreError)
        self.store.transition(first.id, RunState.DESTROYED, now=101.0, reason="closed")
        second = self.create(token="other")
        self.assertEqual(self.store.live_run_for_issue("acme", "widgets", 1).id, second.id)
        self.assertIsNone(self.store.live_run_for_issue("acme", "widgets", 2))

    def test_the_partial_unique_index_refuses_a_second_live_run_even_behind_the_store(self) -> None:
        self.create()
        with self.assertRaises(sqlite3.IntegrityError):
            self.raw().execute(
                "INSERT INTO runs (owner, repo, issue_number, agent, bottles, state, created_at, "
                "updated_at, run_token) "
                "VALUES ('acme', 'widgets', 1, 'a', '[]', 'frozen', 0, 0, 'x')")

    def test_legal_transition_updates_fields_and_logs_in_the_same_write(self) -> None:
        run = self.create()
        run = self.store.transition(run.id, RunState.STARTING, now=105.0, reason="slot free",
                                    slug="acme-widgets-1", pending_prompt=None)
        self.assertEqual((run.state, run.slug, run.updated_at),
                         (RunState.STARTING, "acme-widgets-1", 105.0))
        self.assertEqual(self.store.get_run(run.id), run)
        last = self.store.op_log(run.id)[-1]
        self.assertEqual((last.kind, last.detail, last.at),
                         ("transition", {"from": "queued", "to": "starting",
                                         "reason": "slot free"}, 105.0))

    def test_illegal_transition_raises_and_changes_nothing(self) -> None:
        run = self.create()
        with self.assertRaises(IllegalTransition):
            self.store.transition(run.id, RunState.FROZEN, now=105.0, reason="x", slug="s")
        self.assertEqual(self.store.get_run(run.id), run)
        self.assertEqual([e.kind for e in self.store.op_log(run.id)], ["created"])
        with self.assertRaises(RunNotFound):
            self.store.transition(999, RunState.STARTING, now=1.0, reason="x")

    def test_update_run_sets_other_fields_but_never_state_or_identity(self) -> None:
        run = self.create()
        run = self.store.update_run(run.id, now=110.0, pr_number=9, last_progress_at=109.0,
                                    bottles=["py"])
        self.assertEqual((run.pr_number, run.last_progress_at, run.bottles, run.updated_at),
                         (9, 109.0, ("py",), 110.0))
        for bad in ({"state": RunState.RUNNING}, {"owner": "x"}, {"nonsense": 1}):
            with self.subTest(fields=bad), self.assertRaises(ValueError):
                self.store.update_run(run.id, now=111.0, **bad)
        self.assertEqual(self.store.get_run(run.id), run)
        with self.assertRaises(RunNotFound):
            self.store.update_run(999, now=1.0, slug="x")

    def test_token_lookup_finds_only_live_runs(self) -> None:
        run = self.create(token="secret")
        self.assertEqual(self.store.get_run_by_token("secret").id, run.id)
        self.assertIsNone(self.store.get_run_by_token(""))
        self.store.transition(run.id, RunState.DESTROYED, now=101.0, reason="closed")
        self.assertIsNone(self.store.get_run_by_token("secret"))

    def test_run_for_pr_prefers_the_live_run(self) -> None:
        old = self.create(issue=1)
        self.store.update_run(old.id, now=101.0, pr_number=50)
        self.store.transition(old.id, RunState.DESTROYED, now=102.0, reason="x")
        self.assertEqual(self.store.run_for_pr("acme", "widgets", 50).id, old.id)
        new = self.create(issue=2)
        self.store.update_run(new.id, now=103.0, pr_number=50)
        self.assertEqual(self.store.run_for_pr("acme", "widgets", 50).id, new.id)
        self.assertIsNone(self.store.run_for_pr("acme", "other", 50))

    def test_list_runs_filters_by_liveness_and_state_in_id_order(self) -> None:
        runs = {s: seed_run(self.store, i + 1, s) for i, s in enumerate(RunState)}
        live = [r.id for s, r in runs.items() if s is not RunState.DESTROYED]
        self.assertEqual([r.id for r in self.store.list_runs()], live)
        self.assertEqual([r.id for r in self.store.list_runs(include_destroyed=True)],
                         sorted(r.id for r in runs.values()))
        picked = self.store.list_runs(states=(RunState.FROZEN, RunState.RUNNING))
        self.assertEqual([r.state for r in picked], [RunState.RUNNING, RunState.FROZEN])
        self.assertEqual(self.store.list_runs(states=()), [])
        self.assertEqual(len(self.store.list_runs(include_destroyed=True, limit=3)), 3)

    def test_latest_run_for_issue_includes_destroyed_runs(self) -> None:
        first = seed_run(self.store, 1, RunState.DESTROYED)
        self.assertEqual(self.store.latest_run_for_issue("acme", "widgets", 1).id, first.id)
        second = self.create(issue=1, token="again")
        self.assertEqual(self.store.latest_run_for_issue("acme", "widgets", 1).id, second.id)
        self.assertIsNone(self.store.latest_run_for_issue("acme", "widgets", 2))

    def test_counts_queue_head_and_slot_holders(self) -> None:
        seed_run(self.store, 1, RunState.RUNNING)
        seed_run(self.store, 2, RunState.RESUMING)
        seed_run(self.store, 3, RunState.FROZEN)
        q1 = seed_run(self.store, 4, RunState.QUEUED)
        seed_run(self.store, 5, RunState.QUEUED)
        counts = self.store.count_runs_by_state()
        self.assertEqual((counts["queued"], counts["running"], counts["destroyed"]), (2, 1, 0))
        self.assertEqual(set(counts), {s.value for s in RunState})
        self.assertEqual(self.store.oldest_queued_run().id, q1.id)
        self.assertEqual(self.store.slot_holders(), 2)

    def test_op_log_keeps_append_order_per_run(self) -> None:
        a, b = self.create(issue=1), self.create(issue=2)
        self.store.append_op(a.id, "sidecar.read_issue", {"path": "/issues/1", "status": 200},
                             120.0)
        self.store.append_op(b.id, "other", {}, 121.0)
        self.store.append_op(a.id, "sidecar.done", {"status": 202}, 122.0)
        self.assertEqual([(e.kind, e.detail) for e in self.store.op_log(a.id)],
                         [("created", {"agent": "claude", "bottles": ["py", "node"],
                                       "state": "queued"}),
                          ("sidecar.read_issue", {"path": "/issues/1", "status": 200}),
                          ("sidecar.done", {"status": 202})])
        self.assertEqual(self.store.op_log(999), [])

    def test_runs_written_on_one_thread_are_read_at_once_on_another(self) -> None:
        run = self.create()
        seen = []

        def read() -> None:
            seen.append(self.store.get_run(run.id).state)
            self.store.transition(run.id, RunState.STARTING, now=101.0, reason="x")
            seen.append(self.store.get_run(run.id).state)
        self.assertEqual(self.store.get_run(run.id).state, RunState.QUEUED)
        t = threading.Thread(target=read)
        t.start()
        t.join(10)
        self.assertEqual(seen, [RunState.QUEUED, RunState.STARTING])
        self.assertEqual(self.store.get_run(run.id).state, RunState.STARTING)


    @unittest.skipUnless(Path("/proc/self/fd").is_dir(), "needs /proc to count open files")
    def test_reader_connections_of_finished_threads_are_closed(self) -> None:
        run = self.create()
        self.store.get_run(run.id)
        before = len(list(Path("/proc/self/fd").iterdir()))
        for _ in range(40):  # like the sidecar's one thread per request
            t = threading.Thread(target=self.store.get_run, args=(run.id,))
            t.start()
            t.join(10)
        gc.collect()
        self.assertLess(len(list(Path("/proc/self/fd").iterdir())), before + 5)


class DoneEventTest(StoreTestCase):
    def test_done_event_and_cursor_are_recorded_together_and_survive_a_restart(self) -> None:
        self.assertEqual(self.store.relay_cursor("done"), "")
        record = self.store.record_done_event
        self.assertTrue(record("001.json", 7, "done", "PR opened", 5.0, "done", "001.json"))
        self.assertTrue(record("002.json", 8, "blocked", "", 6.0, "done", "002.json"))
        self.reopen()
        self.assertEqual(self.store.relay_cursor("done"), "002.json")
        events = self.store.pending_done_events()
        self.assertEqual([(e.source, e.run_id, e.status, e.summary, e.at) for e in events],
                         [("001.json", 7, "done", "PR opened", 5.0),
                          ("002.json", 8, "blocked", "", 6.0)])
        self.assertFalse(self.store.record_done_event("001.json", 7, "done", "again", 7.0,
                                                      "done", "001.json"))
        self.assertEqual(self.store.relay_cursor("done"), "002.json")

    def test_processed_done_events_are_no_longer_pending(self) -> None:
        self.store.record_done_event("a", 1, "done", "", 1.0, "done", "a")
        self.store.record_done_event("b", 1, "failed", "", 2.0, "done", "b")
        first = self.store.pending_done_events()[0]
        self.store.mark_done_processed(first.id)
        self.assertEqual([e.source for e in self.store.pending_done_events()], ["b"])
        with self.assertRaises(StoreError):
            self.store.mark_done_processed(999)

    def test_pending_done_events_of_one_run_and_whether_one_is_still_pending(self) -> None:
        self.store.record_done_event("a", 1, "done", "", 1.0, "done", "a")
        self.store.record_done_event("b", 2, "done", "", 2.0, "done", "b")
        self.store.record_done_event("c", 1, "failed", "", 3.0, "done", "c")
        self.assertEqual([e.source for e in self.store.pending_done_events(1)], ["a", "c"])
        first = self.store.pending_done_events(1)[0]
        self.assertTrue(self.store.done_event_pending(first.id))
        self.store.mark_done_processed(first.id)
        self.assertFalse(self.store.done_event_pending(first.id))
        self.assertFalse(self.store.done_event_pending(999))
        self.assertEqual([e.source for e in self.store.pending_done_events(1)], ["c"])


class OutboxTest(StoreTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.run = seed_run(self.store, 1, RunState.RUNNING)

    def enqueue(self, body: str, now: float = 100.0) -> int:
        return self.store.enqueue_comment(self.run.id, "acme", "widgets", 1, body, now)

    def test_due_items_come_oldest_first_and_sent_ones_never_again(self) -> None:
        first, second = self.enqueue("one"), self.enqueue("two")
        self.assertEqual(self.store.due_outbox(99.0), [])
        due = self.store.due_outbox(100.0)
        self.assertEqual([(i.id, i.body, i.number, i.attempts) for i in due],
                         [(first, "one", 1, 0), (second, "two", 1, 0)])
        self.store.mark_outbox_sent(first, 101.0)
        self.assertEqual([i.id for i in self.store.due_outbox(200.0)], [second])

    def test_retry_waits_until_the_next_attempt_and_counts_attempts(self) -> None:
        item = self.enqueue("one")
        self.store.mark_outbox_retry(item, 130.0, "502 bad gateway")
        self.assertEqual(self.store.due_outbox(129.0), [])
        [again] = self.store.due_outbox(130.0)
        self.assertEqual((again.id, again.attempts), (item, 1))
        with self.assertRaises(StoreError):
            self.store.mark_outbox_sent(999, 1.0)

    def test_a_comment_without_a_run_is_queued_too(self) -> None:
        item = self.store.enqueue_comment(None, "acme", "widgets", 5, "no agent label", 100.0)
        [due] = self.store.due_outbox(100.0)
        self.assertEqual((due.id, due.run_id, due.number), (item, None, 5))

    def test_outbox_survives_a_restart(self) -> None:
        self.enqueue("kept")
        self.reopen()
        self.assertEqual([i.body for i in self.store.due_outbox(100.0)], ["kept"])


class HealthAndSharingTest(StoreTestCase):
    def test_ping_is_true_while_open_and_false_after_close_without_raising(self) -> None:
        self.assertTrue(self.store.ping())
        self.store.close()
        self.store.close()
        self.assertFalse(self.store.ping())

    def test_forge_state_lives_in_the_same_file_through_a_schema_hook(self) -> None:
        path = self.dir / "shared.db"
        store = self.open(path, schema_hooks=(forge_state.apply_schema,))
        st = ForgeState("acme", "widgets", 1, None, "claude", ("py",), None, "running", "t0", "t0")
        forge_state.SqliteForgeStateStore(store.side_connection(), migrate=False).put(st)
        store.close()
        again = self.open(path, schema_hooks=(forge_state.apply_schema,))
        tables = {r[0] for r in again.side_connection().execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertIn("forge_state", tables)
        self.assertEqual(again.schema_version, len(store_schema.MIGRATIONS))
        states = forge_state.SqliteForgeStateStore(again.side_connection(), migrate=False)
        self.assertEqual(states.get("acme", "widgets", 1), st)

    def test_run_listeners_see_every_committed_change_and_cannot_break_it(self) -> None:
        seen = []
        self.store.add_run_listener(lambda run: seen.append((run.id, run.state, run.slug)))
        self.store.add_run_listener(lambda run: 1 / 0)  # logged, not raised
        with self.assertLogs("bot_bottle.orchestrator.store", "ERROR") as logged:
            run = seed_run(self.store, 1, RunState.RUNNING, slug="acme-widgets-1")
        self.assertEqual(len(logged.records), 4)
        self.assertEqual(seen[0], (run.id, RunState.QUEUED, None))
        self.assertEqual(seen[-1], (run.id, RunState.RUNNING, "acme-widgets-1"))
        self.assertEqual(len(seen), 4)  # created, starting, running, slug set

    def test_memory_store_works_on_one_thread(self) -> None:
        store = self.open(":memory:")
        self.assertTrue(store.record_delivery("d1", "issues", b"x", 1.0))
        self.assertFalse(store.record_delivery("d1", "issues", b"x", 1.0))
        run = seed_run(store, 1, RunState.FROZEN)
        self.assertEqual(store.list_runs()[0].id, run.id)
        self.assertTrue(store.ping())


if __name__ == "__main__":
    unittest.main()
