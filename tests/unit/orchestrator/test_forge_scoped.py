"""ScopedForge: reads pass through, writes only to the run's issue and its PRs."""

from __future__ import annotations

import unittest

from bot_bottle.contrib.forge.base import ForgeError, ForgeScopeError, ScopedForge
from tests.support.fake_forge import FakeForge
from ._gitea_helpers import forge_for, start_fake


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

    def test_pr_opened_by_another_run_is_out_of_scope(self):
        other_run = ScopedForge(self.inner, "acme", "widgets", self.other)
        pr = other_run.open_pr(title="t", body="b", head="h2", base="main")
        for call in (lambda: self.s.post_comment(pr.number, "x"),
                     lambda: self.s.update_description(pr.number, "x")):
            with self.subTest(call=call), self.assertRaises(ForgeScopeError):
                call()
        self.assertEqual(self.s.pr_numbers, ())
        self.assertFalse(self.s.in_scope(pr.number))

    def test_numbers_that_are_not_the_issue_are_refused_even_if_they_do_not_exist(self):
        for number in (0, -1, self.mine + 1000):
            with self.subTest(number=number), self.assertRaises(ForgeScopeError) as cm:
                self.s.post_comment(number, "x")
            self.assertIsInstance(cm.exception, ForgeError)
            self.assertIn(f"#{number}", str(cm.exception))


class ScopedGiteaForgeTests(unittest.TestCase):
    """A scoped GiteaForge sends nothing to the server for a write outside its scope."""

    def setUp(self):
        self.g = start_fake(self)
        self.mine = self.g.add_issue("acme", "widgets", "mine")
        self.other = self.g.add_issue("acme", "widgets", "other")
        self.foreign_pr = self.g.add_pr("acme", "widgets", "someone's PR")
        self.s = ScopedForge(forge_for(self.g), "acme", "widgets", self.mine)

    def test_every_write_outside_scope_makes_no_request(self):
        writes = []
        for target in (self.other, self.foreign_pr, 9999):
            writes += [(f"comment #{target}", lambda t=target: self.s.post_comment(t, "x")),
                       (f"describe #{target}", lambda t=target: self.s.update_description(t, "x"))]
        self.g.requests.clear()
        for name, call in writes:
            with self.subTest(name), self.assertRaises(PermissionError):
                call()
        self.assertEqual(self.g.requests, [])
        self.assertEqual(self.g.comments("acme", "widgets", self.other), [])
        self.assertEqual(self.g.issue("acme", "widgets", self.foreign_pr)["body"], "")

    def test_writes_in_scope_reach_the_server_and_opened_pr_joins(self):
        self.s.post_comment(self.mine, "hi")
        pr = self.s.open_pr(title="t", body="b", head="bot/work", base="main")
        self.s.update_description(pr.number, "done")
        self.s.post_comment(pr.number, "on the pr")
        self.assertEqual(self.g.issue("acme", "widgets", pr.number)["body"], "done")
        self.assertEqual([c["body"] for c in self.g.comments("acme", "widgets", pr.number)], ["on the pr"])
        self.assertEqual(self.s.read_issue(self.other).title, "other")
