"""The fake's webhook builders produce the same keys as Gitea's sample deliveries."""

from __future__ import annotations

import json
import unittest

from bot_bottle.demo_support import fake_gitea_payloads as P
from bot_bottle.demo_support.fake_gitea import gitea_json
from ._gitea_helpers import GITEA_DATA, start_fake


def shape(d: dict) -> dict:
    return {k: (sorted(v) if isinstance(v, dict) else None) for k, v in d.items()}


class PayloadShapeTests(unittest.TestCase):
    def setUp(self):
        self.g = start_fake(self)
        self.i = self.g.add_issue("acme", "widgets", "Crash", "a < b & c", labels=("agent",),
                                  assignees=("claude-bot",))
        self.p = self.g.add_pr("acme", "widgets", "Fix", head="fix/x")
        self.ci = self.g.add_comment("acme", "widgets", self.i, "go", "alice")
        self.cp = self.g.add_comment("acme", "widgets", self.p, "go", "alice")

    def check(self, built: dict, sample: str):
        want = json.loads((GITEA_DATA / sample).read_text())
        got = json.loads(gitea_json(built))
        self.assertEqual(list(got), list(want))
        for k, v in want.items():
            if isinstance(v, dict):
                self.assertEqual(sorted(got[k]), sorted(v), f"{sample}: {k}")

    def test_builders_match_samples(self):
        cases = [(P.issue_event(self.g, "acme", "widgets", self.i, "opened", "alice"), "issues-opened.json"),
                 (P.issue_event(self.g, "acme", "widgets", self.i, "assigned", "alice"), "issues-assigned.json"),
                 (P.issue_event(self.g, "acme", "widgets", self.i, "label_updated", "alice"), "issues-labeled.json"),
                 (P.comment_event(self.g, "acme", "widgets", self.i, self.ci, "alice"), "issue_comment-created-on-issue.json"),
                 (P.comment_event(self.g, "acme", "widgets", self.p, self.cp, "alice"), "issue_comment-created-on-pull.json"),
                 (P.pull_request_event(self.g, "acme", "widgets", self.p, "opened", "bob"), "pull_request-opened.json")]
        P.close_issue(self.g, "acme", "widgets", self.i)
        cases.append((P.issue_event(self.g, "acme", "widgets", self.i, "closed", "alice"), "issues-closed.json"))
        P.close_issue(self.g, "acme", "widgets", self.p, merged=True)
        merged = P.pull_request_event(self.g, "acme", "widgets", self.p, "closed", "alice")
        cases.append((merged, "pull_request-merged.json"))
        for built, sample in cases:
            with self.subTest(sample):
                self.check(built, sample)
        self.assertTrue(merged["pull_request"]["merged"])

    def test_encoding_is_gitea_style(self):
        raw = gitea_json(P.issue_event(self.g, "acme", "widgets", self.i, "opened", "alice"))
        self.assertIn(b"a \\u003c b \\u0026 c", raw)
        self.assertFalse(raw.endswith(b"\n"))
        self.assertTrue(raw.startswith(b'{\n  "action"'))
