"""The fake Gitea itself, over raw HTTP: the status codes, headers and body shapes of
tests/data/gitea/api (201 on PATCH, 204/404/303 on membership, 401/403/404/422 bodies), request
recording without secrets, and fault injection."""

from __future__ import annotations

import http.client
import json
import unittest
from urllib.parse import urlsplit

from ._gitea_helpers import GITEA_DATA, TOKEN, start_fake


class RawFakeTests(unittest.TestCase):
    def setUp(self):
        self.g = start_fake(self)
        self.n = self.g.add_issue("acme", "widgets", "t", "b")
        self.g.add_comment("acme", "widgets", self.n, "c1", "alice")

    def call(self, method, path, body=None, token=TOKEN):
        u = urlsplit(self.g.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        self.addCleanup(conn.close)
        headers = {"Authorization": f"token {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, "/api/v1" + path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, resp.headers, json.loads(raw) if raw else None

    def sample(self, name):
        return json.loads((GITEA_DATA / "api" / name).read_text())

    def test_patch_answers_201_with_the_issue(self):
        status, headers, body = self.call("PATCH", f"/repos/acme/widgets/issues/{self.n}", {"body": "new"})
        self.assertEqual((status, body["body"], body["number"]), (201, "new", self.n))
        self.assertEqual(headers["Content-Type"], "application/json;charset=utf-8")

    def test_post_comment_answers_201(self):
        status, _, body = self.call("POST", f"/repos/acme/widgets/issues/{self.n}/comments", {"body": "x"})
        self.assertEqual((status, body["body"]), (201, "x"))

    def test_comments_list_has_total_count_header(self):
        status, headers, body = self.call("GET", f"/repos/acme/widgets/issues/{self.n}/comments")
        self.assertEqual((status, headers["X-Total-Count"], len(body)), (200, "1", 1))

    def test_membership_204_404_and_303_with_location(self):
        self.g.add_org_member("bots", "claude-bot")
        status, _, body = self.call("GET", "/orgs/bots/members/claude-bot")
        self.assertEqual((status, body), (204, None))
        status, _, body = self.call("GET", "/orgs/bots/members/mallory")
        self.assertEqual(status, 404)
        self.g.add_token("outsider", "alice")
        status, headers, body = self.call("GET", "/orgs/bots/members/claude-bot", token="outsider")
        self.assertEqual((status, headers["Location"], body),
                         (303, "/api/v1/orgs/bots/public_members/claude-bot", None))

    def test_error_bodies_have_the_shape_of_the_samples(self):
        self.g.add_token("ro", "claude-bot", scopes=())
        cases = [
            ("error-401.json", 401, ("GET", f"/repos/acme/widgets/issues/{self.n}", None, "")),
            ("error-403-scope.json", 403, ("POST", f"/repos/acme/widgets/issues/{self.n}/comments",
                                           {"body": "x"}, "ro")),
            ("error-404.json", 404, ("GET", "/repos/acme/widgets/issues/999", None, TOKEN)),
            ("error-422.json", 422, ("POST", f"/repos/acme/widgets/issues/{self.n}/comments",
                                     {"body": ""}, TOKEN)),
        ]
        for sample, want, (method, path, body, token) in cases:
            with self.subTest(sample):
                status, _, got = self.call(method, path, body, token=token)
                self.assertEqual(status, want)
                self.assertEqual(list(got), list(self.sample(sample)))
                self.assertEqual(got, self.sample(sample))

    def test_requests_are_recorded_without_secrets(self):
        self.call("GET", f"/repos/acme/widgets/issues/{self.n}?x=1")
        r = self.g.requests[-1]
        self.assertEqual((r["method"], r["path"], r["query"]), ("GET", f"/api/v1/repos/acme/widgets/issues/{self.n}", "x=1"))
        self.assertNotIn(TOKEN, json.dumps(self.g.requests))

    def test_faults_fail_then_recover(self):
        self.g.fail_next(1, status=502)
        self.assertEqual(self.call("GET", f"/repos/acme/widgets/issues/{self.n}")[0], 502)
        self.assertEqual(self.call("GET", f"/repos/acme/widgets/issues/{self.n}")[0], 200)
        self.g.drop_next(1)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.call("GET", f"/repos/acme/widgets/issues/{self.n}")
        self.assertEqual(self.call("GET", f"/repos/acme/widgets/issues/{self.n}")[0], 200)

    def test_unknown_route_is_404_and_wrong_method_405(self):
        self.assertEqual(self.call("GET", "/repos/acme/widgets/branches")[0], 404)
        self.assertEqual(self.call("POST", f"/repos/acme/widgets/issues/{self.n}", {})[0], 405)


if __name__ == "__main__":
    unittest.main()
