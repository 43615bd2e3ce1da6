"""GiteaClient/GiteaForge against the fake Gitea: every error status, retries (idempotent
calls only), timeouts, redirects never followed, no paging on the comments list, and the
token kept out of logs and errors."""

from __future__ import annotations

import contextlib
import logging
import socket
import unittest
from urllib.parse import parse_qs

from bot_bottle.contrib.forge.base import (
    ForgeAuthError, ForgeError, ForgeNotFound, ForgeUnavailable, ForgeValidationError,
)
from bot_bottle.contrib.gitea.client import GiteaClient, GiteaForge
from tests._serve import serve_connections
from ._gitea_helpers import quiet_client_log, TOKEN, forge_for, start_fake

STATUS_TABLE = [  # status, error class, retried on GET
    (400, ForgeValidationError, False), (401, ForgeAuthError, False), (403, ForgeAuthError, False),
    (404, ForgeNotFound, False), (409, ForgeValidationError, False), (418, ForgeError, False),
    (422, ForgeValidationError, False), (429, ForgeUnavailable, True), (500, ForgeUnavailable, True),
    (502, ForgeUnavailable, True), (503, ForgeUnavailable, True), (504, ForgeUnavailable, True),
]


class _Base(unittest.TestCase):
    def setUp(self):
        quiet_client_log(self)
        self.g = start_fake(self)
        self.n = self.g.add_issue("acme", "widgets", "Crash", "on empty")
        self.f = forge_for(self.g, retries=2)


class ErrorStatusTests(_Base):
    def test_each_error_status_maps_to_its_forge_error_and_only_transient_ones_are_retried(self):
        for status, cls, retried in STATUS_TABLE:
            with self.subTest(status=status):
                self.g.clear_faults()
                self.g.requests.clear()
                self.g.fail_next(10, status=status)
                with self.assertRaises(cls) as cm:
                    self.f.read_issue(self.n)
                self.assertIs(type(cm.exception), cls)
                self.assertEqual(cm.exception.status, status)
                self.assertIn(f"GET /repos/acme/widgets/issues/{self.n}: HTTP {status}", str(cm.exception))
                self.assertEqual(len(self.g.requests), 3 if retried else 1)
                self.assertNotIn(TOKEN, str(cm.exception))

    def test_writes_are_never_retried_whatever_the_status(self):
        for status in (429, 500, 502, 503, 504):
            for name, call in (("post_comment", lambda: self.f.post_comment(self.n, "x")),
                               ("open_pr", lambda: self.f.open_pr(title="t", body="b", head="h", base="main"))):
                with self.subTest(status=status, call=name):
                    self.g.clear_faults()
                    self.g.requests.clear()
                    self.g.fail_next(10, status=status)
                    with self.assertRaises(ForgeUnavailable):
                        call()
                    self.assertEqual(len(self.g.requests), 1)
        self.assertEqual(self.g.comments("acme", "widgets", self.n), [])
        self.assertEqual(self.g.prs("acme", "widgets"), [])

    def test_patch_is_idempotent_and_retried_on_5xx(self):
        self.g.fail_next(2, status=503)
        self.f.update_description(self.n, "fixed body")
        self.assertEqual([r["method"] for r in self.g.requests], ["PATCH"] * 3)
        self.assertEqual(self.g.issue("acme", "widgets", self.n)["body"], "fixed body")

    def test_gitea_message_is_carried_in_the_error(self):
        with self.assertRaises(ForgeNotFound) as cm:
            self.f.read_issue(4242)
        self.assertTrue(str(cm.exception).endswith("HTTP 404: not found"), str(cm.exception))
        with self.assertRaises(ForgeValidationError) as cm:
            self.f.post_comment(self.n, "")
        self.assertIn("[Body]: Required", str(cm.exception))

    def test_edit_by_a_user_who_is_neither_author_nor_writer_is_403_with_empty_body(self):
        self.g.set_permission("acme", "widgets", "claude-bot", "read")
        with self.assertRaises(ForgeAuthError) as cm:
            self.f.update_description(self.n, "x")
        self.assertEqual(cm.exception.status, 403)
        self.assertEqual(self.g.issue("acme", "widgets", self.n)["body"], "on empty")

    def test_open_pr_errors(self):
        with self.assertRaises(ForgeValidationError) as cm:
            self.f.open_pr(title="t", body="b", head="", base="main")
        self.assertEqual(cm.exception.status, 422)
        self.g.add_token("issues-only", "claude-bot", scopes=("write:issue",))
        with self.assertRaises(ForgeAuthError) as cm:
            forge_for(self.g, token="issues-only").open_pr(title="t", body="b", head="h", base="main")
        self.assertEqual(cm.exception.status, 403)
        with self.assertRaises(ForgeNotFound):
            GiteaForge(self.f.client, "acme", "nope").open_pr(title="t", body="b", head="h", base="main")
        self.assertEqual(self.g.prs("acme", "widgets"), [])

    def test_auth_errors_are_not_read_as_no_permission_or_no_membership(self):
        bad = forge_for(self.g, token="wrong")
        self.g.add_org_member("bots", "claude-bot")
        for name, call in (("user_permission", lambda: bad.user_permission("alice")),
                           ("is_org_member", lambda: bad.is_org_member("bots", "claude-bot")),
                           ("read_comments", lambda: bad.read_comments(self.n)),
                           ("update_description", lambda: bad.update_description(self.n, "x"))):
            with self.subTest(name), self.assertRaises(ForgeAuthError) as cm:
                call()
            self.assertEqual(cm.exception.status, 401)

    def test_unknown_org_or_user_is_not_a_member_and_has_no_permission(self):
        self.assertFalse(self.f.is_org_member("no-such-org", "claude-bot"))
        self.assertEqual(self.f.user_permission("nobody-at-all"), "none")

    def test_server_errors_on_reads_of_permission_and_membership_raise(self):
        self.g.add_org_member("bots", "claude-bot")
        for call in (lambda: self.f.user_permission("claude-bot"),
                     lambda: self.f.is_org_member("bots", "claude-bot")):
            self.g.clear_faults()
            self.g.fail_next(10)
            with self.subTest(call=call), self.assertRaises(ForgeUnavailable):
                call()


class RedirectTests(_Base):
    def test_a_redirect_anywhere_is_an_auth_error_and_is_not_followed(self):
        for status in (301, 302, 303, 307):
            with self.subTest(status=status):
                self.g.clear_faults()
                self.g.requests.clear()
                self.g.fail_next(1, status=status)
                with self.assertRaises(ForgeAuthError) as cm:
                    self.f.read_issue(self.n)
                self.assertEqual(cm.exception.status, status)
                self.assertIn("not followed", str(cm.exception))
                self.assertEqual(len(self.g.requests), 1)

    def test_membership_302_or_303_says_the_token_cannot_see_private_membership(self):
        for status in (302, 303):
            with self.subTest(status=status):
                self.g.clear_faults()
                self.g.fail_next(1, status=status)
                with self.assertRaises(ForgeAuthError) as cm:
                    self.f.is_org_member("bots", "claude-bot")
                self.assertEqual(cm.exception.status, status)
                self.assertIn("cannot see private membership", str(cm.exception))

    def test_303_from_fake_has_location_of_public_members_and_is_never_requested(self):
        self.g.add_org_member("bots", "alice")
        with self.assertRaises(ForgeAuthError):
            self.f.is_org_member("bots", "alice")
        self.assertEqual([r["path"] for r in self.g.requests], ["/api/v1/orgs/bots/members/alice"])


class TimeoutTests(_Base):
    def test_read_timeout_is_retried_then_unavailable(self):
        self.g.set_delay(0.3)
        with self.assertRaises(ForgeUnavailable) as cm:
            forge_for(self.g, timeout=0.1, retries=1).read_issue(self.n)
        self.assertIn("timed out", str(cm.exception))
        self.assertEqual(len(self.g.requests), 2)

    def test_write_timeout_is_not_retried(self):
        self.g.set_delay(0.3)
        with self.assertRaises(ForgeUnavailable):
            forge_for(self.g, timeout=0.1, retries=3).post_comment(self.n, "once")
        self.assertEqual(len(self.g.requests), 1)

    def test_connection_refused_is_unavailable_after_retries(self):
        slept = []
        url = self.g.url
        self.g.stop()
        client = GiteaClient(url, TOKEN, timeout=0.5, retries=2, backoff=0.01, sleep=slept.append)
        with self.assertRaises(ForgeUnavailable) as cm:
            GiteaForge(client, "acme", "widgets").read_issue(1)
        self.assertIsNone(cm.exception.status)
        self.assertEqual(slept, [0.01, 0.02])


class CommentsPagingTests(_Base):
    def test_comments_list_is_read_in_one_request_without_limit_or_page(self):
        for i in range(75):  # more than Gitea's default page size of 50
            self.g.add_comment("acme", "widgets", self.n, f"c{i}", "alice")
        self.g.requests.clear()
        comments = self.f.read_comments(self.n)
        self.assertEqual([c.body for c in comments], [f"c{i}" for i in range(75)])
        self.assertEqual(len(self.g.requests), 1)
        query = parse_qs(self.g.requests[0]["query"])
        self.assertNotIn("limit", query)
        self.assertNotIn("page", query)

    def test_comments_of_a_pr_and_of_an_issue_without_comments(self):
        p = self.g.add_pr("acme", "widgets", "Fix")
        self.g.add_comment("acme", "widgets", p, "on the pr", "bob")
        self.assertEqual([(c.body, c.user.login) for c in self.f.read_comments(p)], [("on the pr", "bob")])
        self.assertEqual(self.f.read_comments(self.n), [])


class TokenHygieneTests(_Base):
    def test_token_is_in_no_log_line_error_or_repr_across_every_failure(self):
        with self.assertLogs("bot_bottle.contrib.gitea.client", level="DEBUG") as logs:
            for status, _cls, _r in STATUS_TABLE + [(303, ForgeAuthError, False)]:
                self.g.clear_faults()
                self.g.fail_next(10, status=status)
                with self.assertRaises(ForgeError) as cm:
                    self.f.read_issue(self.n)
                self.assertNotIn(TOKEN, str(cm.exception) + repr(cm.exception))
            self.g.clear_faults()
            self.g.drop_next(10)
            with self.assertRaises(ForgeUnavailable):
                self.f.read_issue(self.n)
            logging.getLogger("bot_bottle.contrib.gitea.client").debug("marker")
        self.assertTrue(logs.output)
        self.assertNotIn(TOKEN, "\n".join(logs.output))
        self.assertNotIn(TOKEN, repr(self.f.client) + repr(self.f))
        self.assertNotIn(TOKEN, str(vars(self.f)))

    def test_requests_carry_json_headers_and_authenticate(self):
        self.f.post_comment(self.n, "hi")
        h = {k.lower(): v for k, v in self.g.requests[-1]["headers"].items()}
        self.assertEqual((h["accept"], h["content-type"]), ("application/json", "application/json"))
        self.assertEqual(self.g.comments("acme", "widgets", self.n)[0]["user"], "claude-bot")

    def test_base_url_with_trailing_slash(self):
        f = GiteaForge(GiteaClient(self.g.url + "/", TOKEN, timeout=0.5), "acme", "widgets")
        self.assertEqual(f.read_issue(self.n).number, self.n)
        self.assertEqual(self.g.requests[-1]["path"], f"/api/v1/repos/acme/widgets/issues/{self.n}")



class BrokenServerTests(unittest.TestCase):
    """A server that breaks HTTP itself (truncated body, garbage status line, non-JSON) still
    gives a ForgeUnavailable, never a raw http.client/json error; reads are retried."""

    def serve(self, answer: bytes):
        srv = socket.create_server(("127.0.0.1", 0))
        hits = []

        def answer_once(conn):
            with conn:
                conn.recv(65536)
                hits.append(1)
                conn.sendall(answer)
        serve_connections(self.addCleanup, srv, answer_once)
        client = GiteaClient(f"http://127.0.0.1:{srv.getsockname()[1]}", TOKEN, timeout=2, retries=2,
                             sleep=lambda s: None)
        return GiteaForge(client, "acme", "widgets"), hits

    def test_broken_answers_are_unavailable_and_retried(self):
        log = logging.getLogger("bot_bottle.contrib.gitea.client")
        for name, answer in (
                ("truncated body", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"number\": 1"),
                ("garbage status line", b"SPEAKING NO HTTP\r\n\r\n"),
                ("not json", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n<html")):
            with self.subTest(name):
                forge, hits = self.serve(answer)
                with self.assertLogs(log, level="WARNING") if name != "not json" else contextlib.nullcontext():
                    with self.assertRaises(ForgeUnavailable) as cm:
                        forge.read_issue(1)
                self.assertNotIn(TOKEN, str(cm.exception))
                self.assertEqual(len(hits), 1 if name == "not json" else 3)


if __name__ == "__main__":
    unittest.main()
