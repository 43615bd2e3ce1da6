"""One set of Forge assertions run against FakeForge and against GiteaForge + fake Gitea."""

from __future__ import annotations

import unittest

from bot_bottle.contrib.forge.base import ForgeNotFound, ForgeValidationError
from tests.support.fake_forge import FakeForge
from ._gitea_helpers import forge_for, start_fake


class ForgeContract:
    """Subclasses set up `self.forge` and implement `seed_issue`, `add_member`, `grant`."""

    def test_read_issue_returns_what_was_seeded(self):
        n = self.seed_issue("Crash", "on empty", labels=("bug",), assignees=("claude-bot",))
        i = self.forge.read_issue(n)
        self.assertEqual((i.title, i.body, i.state, i.labels, i.assignees, i.is_pull),
                         ("Crash", "on empty", "open", ("bug",), ("claude-bot",), False))

    def test_missing_issue_is_not_found(self):
        with self.assertRaises(ForgeNotFound):
            self.forge.read_issue(404)

    def test_posted_comment_is_read_back_in_order(self):
        n = self.seed_issue("t")
        a = self.forge.post_comment(n, "first")
        b = self.forge.post_comment(n, "second")
        self.assertEqual([c.body for c in self.forge.read_comments(n)], ["first", "second"])
        self.assertLess(a.id, b.id)
        self.assertEqual(a.user.login, "claude-bot")

    def test_empty_comment_is_a_validation_error(self):
        n = self.seed_issue("t")
        with self.assertRaises(ForgeValidationError):
            self.forge.post_comment(n, "")

    def test_update_description_of_issue_and_pr(self):
        n = self.seed_issue("t")
        self.forge.update_description(n, "new")
        pr = self.forge.open_pr(title="p", body="b", head="h", base="main")
        self.forge.update_description(pr.number, "pr body")
        self.assertEqual(self.forge.read_issue(n).body, "new")
        self.assertEqual(self.forge.read_pr(pr.number).body, "pr body")

    def test_opened_pr_reads_back_and_is_a_pull_on_issue_endpoint(self):
        pr = self.forge.open_pr(title="p", body="b", head="h", base="main")
        got = self.forge.read_pr(pr.number)
        self.assertEqual((got.title, got.head_ref, got.base_ref, got.merged, got.state),
                         ("p", "h", "main", False, "open"))
        self.assertTrue(self.forge.read_issue(pr.number).is_pull)

    def test_org_membership_and_permissions(self):
        self.add_member("bots", "claude-bot")
        self.add_member("bots", "helper-bot")
        self.grant("alice", "write")
        self.assertTrue(self.forge.is_org_member("bots", "helper-bot"))
        self.assertFalse(self.forge.is_org_member("bots", "alice"))
        self.assertEqual(self.forge.user_permission("alice"), "write")
        self.assertEqual(self.forge.user_permission("stranger"), "none")

    def test_read_pr_of_a_plain_issue_and_writes_to_missing_numbers_are_not_found(self):
        n = self.seed_issue("t")
        for name, call in (("read_pr", lambda: self.forge.read_pr(n)),
                           ("read_comments", lambda: self.forge.read_comments(999)),
                           ("post_comment", lambda: self.forge.post_comment(999, "x")),
                           ("update_description", lambda: self.forge.update_description(999, "x"))):
            with self.subTest(name), self.assertRaises(ForgeNotFound):
                call()

    def test_open_pr_without_head_is_a_validation_error(self):
        with self.assertRaises(ForgeValidationError):
            self.forge.open_pr(title="p", body="b", head="", base="main")

    def test_unknown_org_has_no_members(self):
        self.assertFalse(self.forge.is_org_member("no-such-org", "claude-bot"))


class FakeForgeContractTests(ForgeContract, unittest.TestCase):
    def setUp(self):
        self.forge = FakeForge()

    def seed_issue(self, title, body="", **kw):
        return self.forge.add_issue(title, body, **kw)

    def add_member(self, org, user):
        self.forge.add_org_member(org, user)

    def grant(self, user, perm):
        self.forge.set_permission(user, perm)


class GiteaForgeContractTests(ForgeContract, unittest.TestCase):
    def setUp(self):
        self.g = start_fake(self)
        self.g.add_user("stranger")
        self.forge = forge_for(self.g)

    def seed_issue(self, title, body="", **kw):
        return self.g.add_issue("acme", "widgets", title, body, **kw)

    def add_member(self, org, user):
        self.g.add_org_member(org, user)

    def grant(self, user, perm):
        self.g.set_permission("acme", "widgets", user, perm)
