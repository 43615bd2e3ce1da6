"""The op-log's bounds on a real SQLite file: every entry's size (strings cut with a marker,
the whole detail at most `DETAIL_MAX` bytes), each run's rate (entries over it counted, not
stored, summarised in one `oplog.dropped` entry, and no progress for the run), and the
audit's flood of 500 sidecar calls with 60 KB paths costing kilobytes, not megabytes."""

from __future__ import annotations

import json
import os
import unittest

from bot_bottle.orchestrator import store_oplog as O
from bot_bottle.orchestrator.model import RunState

from ._fakes import seed_run
from .test_store import StoreTestCase

T0 = 1_000_000.0


class SizeCapTest(StoreTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.run = seed_run(self.store, 1, state=RunState.RUNNING)

    def last(self):
        return self.store.op_log(self.run.id)[-1]

    def test_a_long_string_is_cut_with_a_marker_saying_how_much(self) -> None:
        path = "/issues/1/" + "a" * 60_000
        self.assertTrue(self.store.append_op(self.run.id, "sidecar.unknown",
                                             {"path": path, "status": 404}, T0))
        detail = self.last().detail
        self.assertEqual(detail["status"], 404)
        self.assertEqual(detail["path"],
                         path[:O.STRING_MAX] + f"…[+{len(path) - O.STRING_MAX} chars]")

    def test_short_details_are_stored_unchanged(self) -> None:
        detail = {"number": 7, "by": "git gate", "refs": ["refs/heads/x"], "ok": True}
        self.store.append_op(self.run.id, "pr_opened", detail, T0)
        self.assertEqual(self.last().detail, detail)

    def test_a_detail_over_the_byte_cap_keeps_its_small_fields_and_says_it_was_cut(self) -> None:
        findings = [{"file": f"f{i}" + "x" * 400, "line": i} for i in range(50)]
        self.store.append_op(self.run.id, "git.push", {"result": "refused", "branch": "b",
                                                      "findings": findings}, T0)
        raw = self.raw().execute("SELECT detail FROM op_log ORDER BY id DESC LIMIT 1").fetchone()[0]
        self.assertLessEqual(len(raw.encode()), O.DETAIL_MAX)
        detail = json.loads(raw)
        self.assertEqual((detail["result"], detail["branch"]), ("refused", "b"))
        self.assertNotIn("findings", detail)
        self.assertGreater(detail["truncated"], O.DETAIL_MAX)

    def test_many_keys_and_multibyte_text_stay_under_the_byte_cap(self) -> None:
        detail = {f"k{i:03d}": "é" * 500 for i in range(100)}
        self.store.append_op(self.run.id, "x", detail, T0)
        raw = self.raw().execute("SELECT detail FROM op_log ORDER BY id DESC LIMIT 1").fetchone()[0]
        self.assertLessEqual(len(raw.encode()), O.DETAIL_MAX)
        self.assertIn("truncated", json.loads(raw))

    def test_a_transition_reason_and_a_kind_are_bounded_too(self) -> None:
        self.store.transition(self.run.id, RunState.FROZEN, now=T0, reason="r" * 10_000)
        entry = self.last()
        self.assertEqual(entry.kind, "transition")
        self.assertLess(len(entry.detail["reason"]), O.STRING_MAX + 30)
        self.assertEqual(entry.detail["to"], "frozen")
        self.store.append_op(self.run.id, "k" * 1000, {}, T0, essential=True)
        self.assertLess(len(self.last().kind), O.KIND_MAX + 30)


class RateCapTest(StoreTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.run = seed_run(self.store, 1, state=RunState.RUNNING)
        self.other = seed_run(self.store, 2, state=RunState.RUNNING)
        self.before = len(self.store.op_log(self.run.id))

    def kinds(self, run_id: int) -> list[str]:
        return [e.kind for e in self.store.op_log(run_id)][self.before:]

    def flood(self, n: int, start: float = T0, step: float = 0.01, **kw) -> list[bool]:
        return [self.store.append_op(self.run.id, "sidecar.read_issue",
                                     {"path": "/issues/1", "status": 200}, start + i * step, **kw)
                for i in range(n)]

    def test_entries_over_the_rate_are_dropped_and_counted_in_one_entry_after_the_window(self) -> None:
        results = self.flood(O.RATE_MAX + 25)
        self.assertEqual(results, [True] * O.RATE_MAX + [False] * 25)
        self.assertEqual(self.kinds(self.run.id), ["sidecar.read_issue"] * O.RATE_MAX)
        later = T0 + O.RATE_WINDOW
        self.assertTrue(self.store.append_op(self.run.id, "sidecar.done", {"status": 202}, later))
        *_, summary, entry = self.store.op_log(self.run.id)
        self.assertEqual((summary.kind, summary.detail["dropped"], summary.at),
                         (O.DROPPED, 25, later))
        self.assertEqual(summary.detail["first_at"], T0 + O.RATE_MAX * 0.01)
        self.assertIn("25 entries dropped", summary.detail["message"])
        self.assertEqual(entry.kind, "sidecar.done")
        # the summary is written once; the new window has its own count
        self.assertTrue(self.store.append_op(self.run.id, "sidecar.done", {}, later + 1))
        self.assertEqual(self.kinds(self.run.id).count(O.DROPPED), 1)

    def test_dropped_entries_are_no_progress_and_stored_ones_are(self) -> None:
        seen = []
        self.store.add_run_listener(lambda run: seen.append(run.last_progress_at))
        self.flood(O.RATE_MAX, progress=True)
        last_stored = T0 + (O.RATE_MAX - 1) * 0.01
        self.assertEqual(self.store.get_run(self.run.id).last_progress_at, last_stored)
        self.assertEqual(len(seen), O.RATE_MAX)
        self.assertFalse(self.store.append_op(self.run.id, "sidecar.read_issue", {}, T0 + 30,
                                              progress=True))
        self.assertEqual(self.store.get_run(self.run.id).last_progress_at, last_stored)
        self.assertEqual(len(seen), O.RATE_MAX)  # no change, no listener call

    def test_one_runs_flood_leaves_another_runs_entries_alone(self) -> None:
        self.flood(O.RATE_MAX + 10)
        self.assertTrue(self.store.append_op(self.other.id, "sidecar.read_issue", {}, T0 + 1,
                                             progress=True))
        self.assertEqual(self.store.get_run(self.other.id).last_progress_at, T0 + 1)

    def test_essential_entries_and_transitions_are_never_dropped_and_flush_the_count(self) -> None:
        self.flood(O.RATE_MAX + 3)
        self.assertTrue(self.store.append_op(self.run.id, "pr_opened", {"number": 9}, T0 + 2,
                                             essential=True))
        self.store.transition(self.run.id, RunState.FROZEN, now=T0 + 3, reason="done")
        tail = [(e.kind, e.detail.get("dropped")) for e in self.store.op_log(self.run.id)][-3:]
        self.assertEqual(tail, [(O.DROPPED, 3), ("pr_opened", None), ("transition", None)])

    def test_the_audits_flood_costs_kilobytes_not_megabytes(self) -> None:
        """500 calls with 60 KB paths (the audit: +32 MB in the DB) within a minute."""
        path = "/issues/1/" + "x" * 60_000
        db = str(self.path)
        size = os.path.getsize(db) + os.path.getsize(db + "-wal")
        stored = sum(self.store.append_op(self.run.id, "sidecar.unknown",
                                          {"path": path, "status": 404}, T0 + i * 0.1,
                                          progress=True) for i in range(500))
        self.assertEqual(stored, O.RATE_MAX)
        total = self.raw().execute("SELECT SUM(length(detail)) FROM op_log WHERE run_id = ?",
                                   (self.run.id,)).fetchone()[0]
        self.assertLess(total, O.RATE_MAX * (O.STRING_MAX + 100) + 1000)
        grown = os.path.getsize(db) + os.path.getsize(db + "-wal") - size
        self.assertLess(grown, 2_000_000)  # WAL frames of 60 small commits, not 30 MB of paths


class BoundedDetailTest(unittest.TestCase):
    def test_the_bound_is_a_pure_function_of_the_detail(self) -> None:
        self.assertEqual(O.bounded_detail({"b": 1, "a": "x"}), '{"a": "x", "b": 1}')
        nested = {"a": [{"b": "y" * 600}]}
        got = json.loads(O.bounded_detail(nested))
        self.assertTrue(got["a"][0]["b"].endswith("…[+88 chars]"))
        deep: dict = {}
        node = deep
        for _ in range(50):
            node["n"] = {}
            node = node["n"]
        self.assertLessEqual(len(O.bounded_detail(deep).encode()), O.DETAIL_MAX)


if __name__ == "__main__":
    unittest.main()
