"""ScopedForge: reads pass through, writes only to the run's issue and its PRs."""

from __future__ import annotations

import unittest

from bot_bottle.contrib.forge.base import ForgeScopeError, ScopedForge
from bot_bottle.testing.fake_forge import FakeForge


class ScopedForgeTests(unittest.TestCase):
    def setUp(self):
        self.inner = FakeForge()
        self.mine = self.inner.add_issue("mine")
        self.other = self.inner.add_issue("other")
        self.s = ScopedForge(self.inner, "acme", "widgets", self.mine)

    def test_every_write_outside_scope_raises_a_permission_error(self):
        for name, call in [("comment", lambda: self.s.post_comment(self.other, "x")),
                           ("describe", lambda: self.s.update_description(self.other, "x"))]:
            with self.subTest(name), self.assertRaises(PermissionError) as cm:
                call()
            self.assertIsInstance(cm.exception, ForgeScopeError)
        self.assertEqual(self.inner.comments[self.other], [])
        self.assertEqual(self.inner.issues[self.other].body, "")

    def test_writes_on_own_issue_pass(self):
        self.s.post_comment(self.mine, "hi")
        self.s.update_description(self.mine, "b")
        self.assertEqual(self.inner.read_issue(self.mine).body, "b")

    def test_opened_pr_joins_scope(self):
        pr = self.s.open_pr(title="t", body="b", head="h", base="main")
        self.assertEqual(self.s.pr_numbers, (pr.number,))
        self.s.post_comment(pr.number, "on pr")
        self.assertEqual(self.inner.read_pr(pr.number).number, pr.number)

    def test_pr_not_opened_here_is_out_of_scope_until_allowed(self):
        pr = self.inner.open_pr(title="t", body="b", head="h", base="main")
        with self.assertRaises(ForgeScopeError):
            self.s.update_description(pr.number, "x")
        self.s.allow_pr(pr.number)
        self.s.update_description(pr.number, "x")
        self.assertEqual(self.inner.read_pr(pr.number).body, "x")

    def test_reads_pass_through_anywhere(self):
        self.inner.add_org_member("bots", "claude-bot")
        self.inner.set_permission("alice", "write")
        self.assertEqual(self.s.read_issue(self.other).title, "other")
        self.assertEqual(self.s.read_comments(self.other), [])
        self.assertTrue(self.s.is_org_member("bots", "claude-bot"))
        self.assertEqual(self.s.user_permission("alice"), "write")

    def test_wrapping_another_repo_is_refused(self):
        with self.assertRaises(ForgeScopeError):
            ScopedForge(self.inner, "acme", "gadgets", 1)
