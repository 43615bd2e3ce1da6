"""The fake Gitea's request handler: auth by token, fault injection, request record, and the
API routes with Gitea's status codes and error bodies. Git smart HTTP paths are handed to
`_fake_gitea_git` (no faults, their own record)."""

from __future__ import annotations

import json
import re
import time
from http.server import BaseHTTPRequestHandler

from bot_bottle.demo_support import _fake_gitea_git

ERR_URL = "https://gitea.example.com/api/swagger"
SECRET_HEADERS = {"authorization", "cookie"}


class _Handler(BaseHTTPRequestHandler):
    gitea = None  # set by FakeGitea.start
    routes: tuple = ()  # fake_gitea.ROUTES, set by FakeGitea.start (no import back: no cycle)
    protocol_version = "HTTP/1.1"
    timeout = 5

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def _reply(self, status: int, obj=None, headers: dict | None = None) -> None:
        raw = b"" if obj is None else json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _err(self, status: int, message: str) -> None:
        body = {"message": message, "url": ERR_URL}
        if status == 404:
            body = {"errors": None, "message": message, "url": ERR_URL}
        self._reply(status, body)

    def _handle(self, method: str) -> None:
        ROUTES = self.routes
        g = self.gitea
        path = self.path.split("?", 1)[0]
        git = _fake_gitea_git.GIT_ROUTE.fullmatch(path)
        if git is not None and method in ("GET", "POST"):
            return _fake_gitea_git.serve(self, method, git)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with g.lock:
            g.requests.append({"method": method, "path": path,
                               "query": self.path.split("?", 1)[1] if "?" in self.path else "",
                               "body": raw.decode("utf-8", "replace"),
                               "headers": {k: v for k, v in self.headers.items()
                                           if k.lower() not in SECRET_HEADERS}})
            fail = g._fail.pop(0) if g._fail else None
            drop = g._drop > 0
            if drop:
                g._drop -= 1
        if g.delay:
            time.sleep(g.delay)
        if drop:
            self.close_connection = True
            self.connection.close()
            return
        if fail:
            return self._err(fail, "internal server error")
        if not path.startswith("/api/v1/"):
            return self._err(404, "not found")
        sub = path[len("/api/v1"):]
        auth = self.headers.get("Authorization", "")
        token = auth[len("token "):] if auth.startswith("token ") else ""
        login = g.tokens.get(token)
        if login is None:
            return self._err(401, "token is required" if not token else "user does not exist")
        for m, _spec, rx, *named in ROUTES:
            match = re.fullmatch(rx, sub)
            if match and m == method:
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    return self._err(400, "invalid JSON")
                name = named[0] if named else "_" + method.lower() + "_" + _spec.strip("/").split("/")[-1].strip("{}")
                return getattr(self, name)(token, login, *match.groups(), body=body)
        return self._err(404 if not any(re.fullmatch(r[2], sub) for r in ROUTES) else 405,
                         "not found")

    def do_GET(self): self._handle("GET")  # noqa: E704
    def do_POST(self): self._handle("POST")  # noqa: E704
    def do_PATCH(self): self._handle("PATCH")  # noqa: E704

    def _item(self, owner, repo, number):
        r = self.gitea.repos.get((owner, repo))
        return None if r is None else r["items"].get(int(number))

    def _need(self, token, scope) -> bool:
        if scope in self.gitea.scopes.get(token, set()):
            return True
        self._err(403, f"token does not have at least one of required scope(s), "
                       f"required=[{scope}], token scope=read:issue")
        return False

    # GET /repos/{o}/{r}/issues/{n}
    def _get_index(self, token, login, owner, repo, number, body):
        g = self.gitea
        with g.lock:
            it = self._item(owner, repo, number)
            if it is None:
                return self._err(404, "not found")
            return self._reply(200, g.issue_json(owner, repo, it))

    def _patch_index(self, token, login, owner, repo, number, body):
        if not self._need(token, "write:issue"):
            return
        g = self.gitea
        with g.lock:
            it = self._item(owner, repo, number)
            if it is None:
                return self._err(404, "not found")
            if login != it["user"] and g.permissions.get((owner, repo, login)) not in (
                    "write", "admin", "owner"):
                return self._reply(403)
            for k in ("title", "body", "state"):
                if k in body:
                    it[k] = body[k]
            return self._reply(201, g.issue_json(owner, repo, it))

    def _get_comments(self, token, login, owner, repo, number, body):
        g = self.gitea
        with g.lock:
            if self._item(owner, repo, number) is None:
                return self._err(404, "not found")
            cs = g.repos[(owner, repo)]["comments"][int(number)]
            return self._reply(200, [g.comment_json(owner, repo, int(number), c) for c in cs],
                               {"X-Total-Count": str(len(cs))})

    def _post_comments(self, token, login, owner, repo, number, body):
        if not self._need(token, "write:issue"):
            return
        g = self.gitea
        if not isinstance(body.get("body"), str) or not body["body"]:
            return self._err(422, "[Body]: Required")
        with g.lock:
            if self._item(owner, repo, number) is None:
                return self._err(404, "not found")
            c = {"id": g._next_id(), "body": body["body"], "user": login,
                 "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            g.repos[(owner, repo)]["comments"][int(number)].append(c)
            return self._reply(201, g.comment_json(owner, repo, int(number), c))

    def _get_pull(self, token, login, owner, repo, number, body):
        g = self.gitea
        with g.lock:
            it = self._item(owner, repo, number)
            if it is None or not it["pr"]:
                return self._err(404, "not found")
            return self._reply(200, g.pull_json(owner, repo, it))

    def _post_pulls(self, token, login, owner, repo, body):
        if not self._need(token, "write:repository"):
            return
        for k in ("title", "head", "base"):
            if not body.get(k):
                return self._err(422, f"[{k.capitalize()}]: Required")
        g = self.gitea
        if (owner, repo) not in g.repos:
            return self._err(404, "not found")
        n = g.add_pr(owner, repo, body["title"], body.get("body", ""), user=login,
                     head=body["head"], base=body["base"])
        with g.lock:
            return self._reply(201, g.pull_json(owner, repo, g.repos[(owner, repo)]["items"][n]))

    def _get_username(self, token, login, org, user, body):
        g = self.gitea
        with g.lock:
            members = g.org_members.get(org)
            if members is None:
                return self._err(404, "not found")
            if login not in members:
                return self._reply(303, None, {
                    "Location": f"/api/v1/orgs/{org}/public_members/{user}"})
            return self._reply(204 if user in members else 404,
                               None if user in members else {"errors": None,
                                                             "message": "not found",
                                                             "url": ERR_URL})

    def _get_permission(self, token, login, owner, repo, user, body):
        g = self.gitea
        with g.lock:
            if (owner, repo) not in g.repos or user not in g.users:
                return self._err(404, "not found")
            perm = g.permissions.get((owner, repo, user))
            if perm is None:
                if user == owner:
                    perm = "owner"
                else:
                    return self._err(404, "not found")
            return self._reply(200, {"permission": perm, "role_name": perm,
                                     "user": g.user_json(user)})
