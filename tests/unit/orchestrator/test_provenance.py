"""The provenance view: the run's object under the document's version, and its op-log with
ISO-8601 UTC times, JSON-ready whatever the details hold."""

from __future__ import annotations

import json
import unittest
from dataclasses import dataclass

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.provenance import iso_time, provenance_json

NOW = 1_700_000_100.0  # 2023-11-14T22:15:00Z
RUN = {"id": 3, "state": "running"}


@dataclass(frozen=True)
class Op:  # the shape of the store's OpLogEntry
    at: float
    kind: str
    detail: dict


class ProvenanceJsonTests(unittest.TestCase):
    def test_the_run_is_under_the_version_and_ops_are_in_order_with_iso_times(self):
        ops = [Op(NOW - 80.5, "transition", {"from": "queued", "to": "starting"}),
               Op(NOW, "sidecar", {"call": "post_comment", "number": 42})]
        out = provenance_json(RUN, ops)
        self.assertEqual(out, {"version": 2, "run": RUN, "ops": [
            {"at": "2023-11-14T22:13:39Z", "kind": "transition",
             "detail": {"from": "queued", "to": "starting"}},
            {"at": "2023-11-14T22:15:00Z", "kind": "sidecar",
             "detail": {"call": "post_comment", "number": 42}},
        ]})
        json.dumps(out, allow_nan=False)

    def test_times_are_utc_to_the_second(self):
        self.assertEqual(iso_time(0), "1970-01-01T00:00:00Z")
        self.assertEqual(iso_time(NOW + 0.99), "2023-11-14T22:15:00Z")

    def test_odd_detail_values_become_json_ready(self):
        out = provenance_json(RUN, [Op(NOW, "x", {"state": RunState.FROZEN, "items": ("a",),
                                                  1: object})])
        detail = out["ops"][0]["detail"]
        self.assertEqual(detail["state"], "frozen")
        self.assertEqual(detail["items"], ["a"])
        self.assertIsInstance(detail["1"], str)
        json.dumps(out)


if __name__ == "__main__":
    unittest.main()
