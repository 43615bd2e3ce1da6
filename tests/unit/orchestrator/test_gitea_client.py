"""GiteaClient/GiteaForge against the fake Gitea: reads, writes, errors, retries, 303."""

from __future__ import annotations

import unittest

from bot_bottle.contrib.forge.base import (
    ForgeAuthError, ForgeNotFound, ForgeUnavailable, ForgeValidationError,
)
from ._gitea_helpers import quiet_client_log, TOKEN, forge_for, start_fake


class GiteaForgeTests(unittest.TestCase):
    def setUp(self):
        quiet_client_log(self)
        self.g = start_fake(self)
        self.n = self.g.add_issue("acme", "widgets", "Crash", "on empty", labels=("bug",),
                                  assignees=("claude-bot",))
        self.f = forge_for(self.g)

    def test_read_issue_parses_fields(self):
        i = self.f.read_issue(self.n)
        self.assertEqual((i.number, i.title, i.body, i.state), (self.n, "Crash", "on empty", "open"))
        self.assertEqual((i.labels, i.assignees, i.is_pull, i.user.login),
                         (("bug",), ("claude-bot",), False, "alice"))

    def test_request_sends_token_header(self):
        self.f.read_issue(self.n)
        self.assertNotIn("Authorization", self.g.requests[-1]["headers"])
        self.assertEqual(self.g.requests[-1]["path"], f"/api/v1/repos/acme/widgets/issues/{self.n}")

    def test_read_pr_and_pr_is_pull_on_issue_endpoint(self):
        p = self.g.add_pr("acme", "widgets", "Fix", "b", head="fix/x", base="main", merged=True)
        pr = self.f.read_pr(p)
        self.assertEqual((pr.head_ref, pr.base_ref, pr.merged, pr.user.login), ("fix/x", "main", True, "bob"))
        self.assertTrue(self.f.read_issue(p).is_pull)

    def test_read_pr_of_plain_issue_is_not_found(self):
        with self.assertRaises(ForgeNotFound):
            self.f.read_pr(self.n)

    def test_comments_round_trip(self):
        c = self.f.post_comment(self.n, "hello <b>")
        self.assertEqual((c.body, c.user.login), ("hello <b>", "claude-bot"))
        self.assertEqual([x.id for x in self.f.read_comments(self.n)], [c.id])

    def test_update_description_accepts_201(self):
        self.f.update_description(self.n, "new body")
        self.assertEqual(self.g.issue("acme", "widgets", self.n)["body"], "new body")

    def test_open_pr(self):
        pr = self.f.open_pr(title="T", body="B", head="h", base="main")
        self.assertEqual((pr.title, pr.head_ref, pr.state), ("T", "h", "open"))
        self.assertEqual(len(self.g.prs("acme", "widgets")), 1)

    def test_org_membership_204_and_404(self):
        self.g.add_org_member("bots", "claude-bot")
        self.assertTrue(self.f.is_org_member("bots", "claude-bot"))
        self.assertFalse(self.f.is_org_member("bots", "mallory"))

    def test_org_membership_303_is_auth_error_and_not_followed(self):
        self.g.add_org_member("bots", "someone")
        with self.assertRaises(ForgeAuthError) as cm:
            self.f.is_org_member("bots", "someone")
        self.assertEqual(cm.exception.status, 303)
        self.assertIn("private membership", str(cm.exception))
        self.assertFalse(any("public_members" in r["path"] for r in self.g.requests))

    def test_user_permission(self):
        self.g.set_permission("acme", "widgets", "alice", "admin")
        self.assertEqual(self.f.user_permission("alice"), "admin")
        self.g.add_user("eve")
        self.assertEqual(self.f.user_permission("eve"), "none")

    def test_401_for_unknown_token(self):
        with self.assertRaises(ForgeAuthError) as cm:
            forge_for(self.g, token="wrong").read_issue(self.n)
        self.assertEqual(cm.exception.status, 401)

    def test_403_for_missing_scope(self):
        self.g.add_token("ro", "claude-bot", scopes=())
        with self.assertRaises(ForgeAuthError) as cm:
            forge_for(self.g, token="ro").post_comment(self.n, "x")
        self.assertEqual(cm.exception.status, 403)

    def test_404(self):
        with self.assertRaises(ForgeNotFound):
            self.f.read_issue(999)

    def test_422_on_empty_comment(self):
        with self.assertRaises(ForgeValidationError) as cm:
            self.f.post_comment(self.n, "")
        self.assertEqual(cm.exception.status, 422)

    def test_get_retries_on_500_then_succeeds(self):
        self.g.fail_next(2)
        self.assertEqual(self.f.read_issue(self.n).number, self.n)
        self.assertEqual(len(self.g.requests), 3)

    def test_get_gives_up_after_retries(self):
        self.g.fail_next(10)
        with self.assertRaises(ForgeUnavailable) as cm:
            forge_for(self.g, retries=2).read_issue(self.n)
        self.assertEqual((cm.exception.status, len(self.g.requests)), (500, 3))

    def test_post_is_not_retried(self):
        self.g.fail_next(1)
        with self.assertRaises(ForgeUnavailable):
            self.f.post_comment(self.n, "once")
        self.assertEqual(len(self.g.requests), 1)

    def test_backoff_is_exponential_and_injectable(self):
        slept = []
        self.g.fail_next(3)
        forge_for(self.g, sleep=slept.append, backoff=0.1).read_issue(self.n)
        self.assertEqual(slept, [0.1, 0.2, 0.4])

    def test_timeout_is_unavailable(self):
        self.g.set_delay(0.3)
        with self.assertRaises(ForgeUnavailable):
            forge_for(self.g, timeout=0.1, retries=0).read_issue(self.n)

    def test_dropped_connection_is_retried(self):
        self.g.drop_next(1)
        self.assertEqual(self.f.read_issue(self.n).number, self.n)

    def test_dropped_connection_on_post_is_unavailable(self):
        self.g.drop_next(1)
        with self.assertRaises(ForgeUnavailable):
            self.f.post_comment(self.n, "x")

    def test_token_never_logged(self):
        self.g.fail_next(10)
        with self.assertLogs("bot_bottle.contrib.gitea.client", level="DEBUG") as logs:
            with self.assertRaises(ForgeUnavailable) as cm:
                self.f.read_issue(self.n)
        self.assertTrue(logs.output)
        self.assertNotIn(TOKEN, "\n".join(logs.output) + str(cm.exception)
                         + repr(self.f.client))



class ParseSamplesTests(unittest.TestCase):
    """The adapter's parsers read Gitea's real-shaped API answers in tests/data/gitea/api."""

    def load(self, name):
        import json
        from ._gitea_helpers import GITEA_DATA
        return json.loads((GITEA_DATA / "api" / name).read_text())

    def test_issue_pull_and_comments_samples_parse(self):
        from bot_bottle.contrib.gitea.client import parse_comment, parse_issue, parse_pr
        i = parse_issue(self.load("GET-issue-42.json"))
        self.assertEqual((i.number, i.title, i.state, i.labels, i.assignees, i.is_pull, i.user.login),
                         (42, "Widgets crash on empty input", "open", ("agent", "bug"), ("claude-bot",),
                          False, "alice"))
        self.assertTrue(parse_issue(self.load("GET-issue-43-is-a-pull.json")).is_pull)
        self.assertEqual(parse_issue(self.load("PATCH-issue-42-201.json")).number, 42)
        pr = parse_pr(self.load("GET-pull-43.json"))
        self.assertEqual((pr.number, pr.head_ref, pr.base_ref, pr.merged, pr.state, pr.user.login),
                         (43, "fix/empty-input", "main", False, "open", "bob"))
        self.assertTrue(pr.body.startswith("Fixes #42."))
        cs = [parse_comment(c) for c in self.load("GET-issue-42-comments.json")]
        self.assertEqual([(c.id, c.user.login) for c in cs], [(1001, "alice"), (1003, "claude-bot")])
        c = parse_comment(self.load("POST-issue-42-comment-201.json"))
        self.assertEqual((c.id, c.user.login, c.user.id), (1003, "claude-bot", 9))


if __name__ == "__main__":
    unittest.main()
