"""JSON views of runs and op-logs: complete, JSON-ready, and never carrying the run token."""

from __future__ import annotations

import dataclasses
import json
import unittest
from dataclasses import dataclass

from bot_bottle.orchestrator.model import RunRecord, RunState
from bot_bottle.orchestrator.provenance import provenance_json, run_json

NOW = 1_700_000_100.0


def make_run(**changes) -> RunRecord:
    base = RunRecord(id=3, owner="acme", repo="widgets", issue_number=42, agent="claude",
                     bottles=("db", "web"), state=RunState.RUNNING, created_at=NOW - 90.5,
                     updated_at=NOW - 10, run_token="s3cr3t-token", slug="acme-widgets-42",
                     pr_number=43)
    return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class Op:  # the shape of the store's OpLogEntry
    at: float
    kind: str
    detail: dict


class RunJsonTests(unittest.TestCase):
    def test_run_token_is_never_included(self):
        out = run_json(make_run(), NOW)
        self.assertNotIn("run_token", out)
        self.assertNotIn("s3cr3t-token", json.dumps(out))

    def test_every_other_field_is_included(self):
        out = run_json(make_run(), NOW)
        expected = {f.name for f in dataclasses.fields(RunRecord)} - {
            "run_token", "launch_prompt", "pending_prompt"}
        self.assertEqual(set(out) - {"age_seconds"}, expected)

    def test_the_prompts_a_run_keeps_are_left_out_however_large(self):
        run = make_run(launch_prompt="issue text " * 100_000, pending_prompt="a comment's prompt")
        out = run_json(run, NOW)
        self.assertNotIn("launch_prompt", out)
        self.assertNotIn("pending_prompt", out)
        text = json.dumps(provenance_json(run, [], now=NOW))
        self.assertNotIn("issue text", text)
        self.assertNotIn("a comment's prompt", text)
        self.assertLess(len(text), 2000)

    def test_state_is_its_value_and_tuples_are_lists(self):
        out = run_json(make_run(), NOW)
        self.assertEqual(out["state"], "running")
        self.assertEqual(out["bottles"], ["db", "web"])
        self.assertEqual(out["pr_number"], 43)
        self.assertIsNone(out["last_done_status"])

    def test_age_is_whole_seconds_since_creation_never_negative(self):
        self.assertEqual(run_json(make_run(), NOW)["age_seconds"], 90)
        self.assertEqual(run_json(make_run(created_at=NOW + 5), NOW)["age_seconds"], 0)

    def test_result_is_json_serialisable(self):
        json.dumps(run_json(make_run(), NOW), allow_nan=False)


class ProvenanceJsonTests(unittest.TestCase):
    def test_ops_are_listed_in_order_with_at_kind_detail(self):
        ops = [Op(NOW - 80, "transition", {"from": "queued", "to": "starting"}),
               Op(NOW - 5, "sidecar", {"call": "post_comment", "number": 42})]
        out = provenance_json(make_run(), ops, now=NOW)
        self.assertEqual(out["run"], run_json(make_run(), NOW))
        self.assertEqual(out["ops"], [
            {"at": NOW - 80, "kind": "transition", "detail": {"from": "queued", "to": "starting"}},
            {"at": NOW - 5, "kind": "sidecar", "detail": {"call": "post_comment", "number": 42}},
        ])
        json.dumps(out, allow_nan=False)

    def test_without_now_age_is_unknown(self):
        out = provenance_json(make_run(), [])
        self.assertIsNone(out["run"]["age_seconds"])
        self.assertEqual(out["ops"], [])

    def test_odd_detail_values_become_json_ready(self):
        out = provenance_json(make_run(), [Op(NOW, "x", {"state": RunState.FROZEN,
                                                          "items": ("a",), 1: object})])
        detail = out["ops"][0]["detail"]
        self.assertEqual(detail["state"], "frozen")
        self.assertEqual(detail["items"], ["a"])
        self.assertIsInstance(detail["1"], str)
        json.dumps(out)


if __name__ == "__main__":
    unittest.main()
