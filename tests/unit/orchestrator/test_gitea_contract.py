"""The fake's routes and the client's requests exist in Gitea's swagger; fake responses carry
the required fields (swagger `required`, else the API samples' keys)."""

from __future__ import annotations

import json
import re
import unittest

from bot_bottle.demo_support.fake_gitea import ROUTES
from ._gitea_helpers import GITEA_DATA, forge_for, start_fake


def _template(path: str, paths: dict) -> str | None:
    for tpl in paths:
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tpl)), path):
            return tpl
    return None


class SwaggerContractTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spec = json.loads((GITEA_DATA / "swagger.v1.json").read_text())

    def test_every_fake_route_is_in_swagger_with_that_method(self):
        self.assertEqual(self.spec["basePath"], "/api/v1")
        for method, tpl, *_ in ROUTES:
            with self.subTest(method=method, path=tpl):
                self.assertIn(method.lower(), self.spec["paths"][tpl])

    def test_every_client_request_is_in_swagger(self):
        g = start_fake(self)
        f = forge_for(g)
        n = g.add_issue("acme", "widgets", "t")
        g.add_org_member("bots", "claude-bot")
        f.read_issue(n), f.read_comments(n), f.post_comment(n, "x"), f.update_description(n, "y")
        pr = f.open_pr(title="t", body="b", head="h", base="main")
        f.read_pr(pr.number), f.is_org_member("bots", "claude-bot"), f.user_permission("claude-bot")
        self.assertEqual(len(g.requests), 8)
        for r in g.requests:
            with self.subTest(r["method"], path=r["path"]):
                tpl = _template(r["path"][len("/api/v1"):], self.spec["paths"])
                self.assertIsNotNone(tpl)
                self.assertIn(r["method"].lower(), self.spec["paths"][tpl])

    def test_fake_responses_carry_required_fields(self):
        g = start_fake(self)
        n = g.add_issue("acme", "widgets", "t", assignees=("claude-bot",), labels=("bug",))
        p = g.add_pr("acme", "widgets", "p")
        g.add_comment("acme", "widgets", n, "c", "alice")
        api = GITEA_DATA / "api"
        with g.lock:
            pairs = [("Issue", g.issue_json("acme", "widgets", g.repos[("acme", "widgets")]["items"][n]), "GET-issue-42.json"),
                     ("PullRequest", g.pull_json("acme", "widgets", g.repos[("acme", "widgets")]["items"][p]), "GET-pull-43.json"),
                     ("Comment", g.comment_json("acme", "widgets", n, g.repos[("acme", "widgets")]["comments"][n][0]), "POST-issue-42-comment-201.json")]
        for name, obj, sample in pairs:
            with self.subTest(name):
                required = self.spec["definitions"][name].get("required")
                keys = required or list(json.loads((api / sample).read_text()))
                self.assertEqual([k for k in keys if k not in obj], [])
                self.assertEqual(set(obj["user"]), set(json.loads((api / sample).read_text())["user"]))


class SwaggerStatusAndShapeTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spec = json.loads((GITEA_DATA / "swagger.v1.json").read_text())

    def test_every_status_the_fake_answers_on_success_is_declared_in_swagger(self):
        from bot_bottle.contrib.forge.base import ForgeError
        g = start_fake(self)
        c = forge_for(g).client
        n = g.add_issue("acme", "widgets", "t")
        g.add_org_member("bots", "claude-bot")
        g.add_org_member("outsiders", "alice")
        r = "/repos/acme/widgets"
        calls = [("GET", f"{r}/issues/{n}", None), ("PATCH", f"{r}/issues/{n}", {"body": "b"}),
                 ("GET", f"{r}/issues/{n}/comments", None), ("POST", f"{r}/issues/{n}/comments", {"body": "x"}),
                 ("POST", f"{r}/pulls", {"title": "t", "head": "h", "base": "main"}),
                 ("GET", f"{r}/pulls/{n + 1}", None), ("GET", "/orgs/bots/members/claude-bot", None),
                 ("GET", "/orgs/bots/members/mallory", None), ("GET", "/orgs/outsiders/members/alice", None),
                 ("GET", f"{r}/collaborators/claude-bot/permission", None)]
        seen = set()
        for method, path, body in calls:
            with self.subTest(method=method, path=path):
                try:
                    status = (c.get(path) if method == "GET" else
                              getattr(c, method.lower())(path, body)).status
                except ForgeError as exc:
                    status = exc.status
                tpl = _template(path, self.spec["paths"])
                self.assertIn(str(status), self.spec["paths"][tpl][method.lower()]["responses"])
                seen.add((method, tpl, status))
        self.assertIn(("PATCH", "/repos/{owner}/{repo}/issues/{index}", 201), seen)
        self.assertIn(("GET", "/orgs/{org}/members/{username}", 303), seen)
        self.assertIn(("GET", "/orgs/{org}/members/{username}", 204), seen)
        self.assertIn(("GET", "/orgs/{org}/members/{username}", 404), seen)

    def test_fake_objects_use_only_keys_swagger_defines(self):
        g = start_fake(self)
        n = g.add_issue("acme", "widgets", "t", assignees=("claude-bot",), labels=("bug",))
        p = g.add_pr("acme", "widgets", "p")
        g.add_comment("acme", "widgets", n, "c", "alice")
        with g.lock:
            items = g.repos[("acme", "widgets")]["items"]
            objs = [("Issue", g.issue_json("acme", "widgets", items[n])),
                    ("PullRequest", g.pull_json("acme", "widgets", items[p])),
                    ("Comment", g.comment_json("acme", "widgets", n, g.repos[("acme", "widgets")]["comments"][n][0])),
                    ("User", g.user_json("alice"))]
        for name, obj in objs:
            with self.subTest(name):
                extra = set(obj) - set(self.spec["definitions"][name]["properties"])
                # README: every user object ends with a duplicate `username` key (not in swagger)
                self.assertEqual(extra, {"username"} if name == "User" else set())
        perm = forge_for(g).client.get("/repos/acme/widgets/collaborators/claude-bot/permission").data
        self.assertEqual(set(perm), set(self.spec["definitions"]["RepoCollaboratorPermission"]["properties"]))
