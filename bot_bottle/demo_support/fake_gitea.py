"""A fake Gitea: a real HTTP server on 127.0.0.1 (port 0) holding repos, issues, PRs,
comments, org members, permissions and tokens in memory, answering the API endpoints the
client uses with Gitea's status codes and shapes; fault injection; a request record; and
signed webhook delivery. Each repo is also a real git repository served over smart HTTP at
`<url>/<owner>/<repo>.git` (`_fake_gitea_git`: `git http-backend` behind Gitea's token rules),
optionally seeded with files (`add_repo(..., files=)`, `add_commit`). Standard library only
(the `demo` command reuses it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
import uuid
from typing import Any

from ._local_server import LocalHTTPServer

ROOT = "https://gitea.example.com"
ERR_URL = f"{ROOT}/api/swagger"
ROUTES = [  # (method, swagger path, regex)
    ("GET", "/repos/{owner}/{repo}/issues/{index}", r"/repos/([^/]+)/([^/]+)/issues/(\d+)"),
    ("PATCH", "/repos/{owner}/{repo}/issues/{index}", r"/repos/([^/]+)/([^/]+)/issues/(\d+)"),
    ("GET", "/repos/{owner}/{repo}/issues/{index}/comments",
     r"/repos/([^/]+)/([^/]+)/issues/(\d+)/comments"),
    ("POST", "/repos/{owner}/{repo}/issues/{index}/comments",
     r"/repos/([^/]+)/([^/]+)/issues/(\d+)/comments"),
    ("GET", "/repos/{owner}/{repo}/pulls/{index}", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)", "_get_pull"),
    ("POST", "/repos/{owner}/{repo}/pulls", r"/repos/([^/]+)/([^/]+)/pulls"),
    ("GET", "/orgs/{org}/members/{username}", r"/orgs/([^/]+)/members/([^/]+)"),
    ("GET", "/repos/{owner}/{repo}/collaborators/{collaborator}/permission",
     r"/repos/([^/]+)/([^/]+)/collaborators/([^/]+)/permission"),
]


def gitea_json(obj: Any) -> bytes:
    """Gitea's webhook encoding: indent 2, no trailing newline, < > & escaped."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .encode())


class FakeGitea(LocalHTTPServer):
    POLL_INTERVAL = 0.02

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, int] = {}
        self.tokens: dict[str, str] = {}  # token -> login
        self.scopes: dict[str, set[str]] = {}
        self.repos: dict[tuple[str, str], dict] = {}
        self.org_members: dict[str, set[str]] = {}
        self.permissions: dict[tuple[str, str, str], str] = {}
        self.requests: list[dict] = []
        self.git_requests: list[dict] = []  # git smart HTTP, kept apart from the API record
        self.git = GitRepos()
        self._fail: list[int] = []
        self._drop = 0
        self.delay = 0.0
        self._ids = 1000

    # ---- lifecycle
    def start(self) -> "FakeGitea":
        fake = self

        class Handler(_Handler):
            gitea = fake
            routes = tuple(ROUTES)
        self._serve(Handler)
        return self

    def stop(self) -> None:
        super().stop()
        self.git.cleanup()

    # ---- setup
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def add_user(self, login: str) -> int:
        with self.lock:
            return self.users.setdefault(login, len(self.users) + 2)

    def add_token(self, token: str, login: str, scopes: tuple[str, ...] = ("write:issue",
                  "write:repository", "read:organization")) -> None:
        self.add_user(login)
        with self.lock:
            self.tokens[token] = login
            self.scopes[token] = set(scopes)

    def add_repo(self, owner: str, repo: str, default_branch: str = "main",
                 files: dict[str, str] | None = None) -> None:
        """A repo; with `files` (path -> text) its git repository gets a first commit on
        `default_branch` (else it is created empty on the first git request)."""
        self.add_user(owner)
        with self.lock:
            self.repos.setdefault((owner, repo), {"items": {}, "comments": {}, "next": 1,
                                                  "branch": default_branch})
        if files:
            self.add_commit(owner, repo, files)

    def add_commit(self, owner: str, repo: str, files: dict[str, str], message: str = "seed",
                   branch: str | None = None) -> str:
        """Commit `files` on `branch` (default: the repo's default branch); the commit's sha."""
        with self.lock:
            default = self.repos[(owner, repo)]["branch"]
        return self.git.commit(owner, repo, branch or default, files, message)

    def git_url(self, owner: str, repo: str) -> str:
        return f"{self.url}/{owner}/{repo}.git"

    def add_issue(self, owner: str, repo: str, title: str, body: str = "", *, user: str = "alice",
                  labels: tuple[str, ...] = (), assignees: tuple[str, ...] = (),
                  state: str = "open") -> int:
        return self._add_item(owner, repo, title, body, user, labels, assignees, state, None)

    def add_pr(self, owner: str, repo: str, title: str, body: str = "", *, user: str = "bob",
               head: str = "feature", base: str = "main", state: str = "open",
               merged: bool = False) -> int:
        return self._add_item(owner, repo, title, body, user, (), (), state,
                              {"head": head, "base": base, "merged": merged})

    def _add_item(self, owner, repo, title, body, user, labels, assignees, state, pr) -> int:
        for u in (user, *assignees):
            self.add_user(u)
        with self.lock:
            r = self.repos[(owner, repo)]
            n = r["next"]
            r["next"] += 1
            r["items"][n] = {"number": n, "id": self._next_id(), "title": title, "body": body,
                             "user": user, "labels": list(labels), "assignees": list(assignees),
                             "state": state, "pr": pr, "created_at": _now()}
            r["comments"][n] = []
            return n

    def add_comment(self, owner: str, repo: str, number: int, body: str, user: str) -> int:
        self.add_user(user)
        with self.lock:
            c = {"id": self._next_id(), "body": body, "user": user, "created_at": _now()}
            self.repos[(owner, repo)]["comments"][number].append(c)
            return c["id"]

    def add_org_member(self, org: str, user: str) -> None:
        self.add_user(user)
        with self.lock:
            self.org_members.setdefault(org, set()).add(user)

    def set_permission(self, owner: str, repo: str, user: str, permission: str) -> None:
        self.add_user(user)
        with self.lock:
            self.permissions[(owner, repo, user)] = permission

    # ---- faults
    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self._fail.extend([status] * n)

    def clear_faults(self) -> None:
        with self.lock:
            self._fail.clear()
            self._drop = 0

    def drop_next(self, n: int = 1) -> None:
        with self.lock:
            self._drop += n

    def set_delay(self, seconds: float) -> None:
        self.delay = seconds

    # ---- inspection (plain dicts)
    def issue(self, owner: str, repo: str, number: int) -> dict:
        with self.lock:
            return dict(self.repos[(owner, repo)]["items"][number])

    def comments(self, owner: str, repo: str, number: int) -> list[dict]:
        with self.lock:
            return [dict(c) for c in self.repos[(owner, repo)]["comments"][number]]

    def prs(self, owner: str, repo: str) -> list[dict]:
        with self.lock:
            return [dict(i) for i in self.repos[(owner, repo)]["items"].values() if i["pr"]]

    # ---- JSON shapes (the API samples' keys)
    def user_json(self, login: str) -> dict:
        uid = self.users.get(login, 0)
        return {"id": uid, "login": login, "login_name": "", "source_id": 0, "full_name": "",
                "email": f"{login}@noreply.gitea.example.com",
                "avatar_url": f"{ROOT}/avatars/{uid}", "html_url": f"{ROOT}/{login}",
                "language": "", "is_admin": False, "last_login": "0001-01-01T00:00:00Z",
                "created": "2025-01-01T00:00:00Z", "restricted": False, "active": False,
                "prohibit_login": False, "location": "", "website": "", "description": "",
                "visibility": "public", "followers_count": 0, "following_count": 0,
                "starred_repos_count": 0, "username": login}

    def issue_json(self, owner: str, repo: str, it: dict) -> dict:
        n, kind = it["number"], ("pulls" if it["pr"] else "issues")
        pr = it["pr"]
        return {"id": it["id"], "url": f"{ROOT}/api/v1/repos/{owner}/{repo}/issues/{n}",
                "html_url": f"{ROOT}/{owner}/{repo}/{kind}/{n}", "number": n,
                "user": self.user_json(it["user"]), "original_author": "",
                "original_author_id": 0, "title": it["title"], "body": it["body"], "ref": "",
                "assets": [], "labels": [_label(lb) for lb in it["labels"]], "milestone": None,
                "assignee": self.user_json(it["assignees"][0]) if it["assignees"] else None,
                "assignees": [self.user_json(a) for a in it["assignees"]] or None,
                "state": it["state"], "is_locked": False,
                "comments": len(self.repos[(owner, repo)]["comments"][n]),
                "created_at": it["created_at"], "updated_at": it["created_at"],
                "closed_at": None, "due_date": None, "time_estimate": 0,
                "pull_request": None if not pr else {"merged": pr["merged"], "merged_at": None,
                                                     "draft": False,
                                                     "html_url": f"{ROOT}/{owner}/{repo}/pulls/{n}"},
                "repository": {"id": 12, "name": repo, "owner": owner,
                               "full_name": f"{owner}/{repo}"}, "pin_order": 0}

    def pull_json(self, owner: str, repo: str, it: dict) -> dict:
        n, pr = it["number"], it["pr"]
        ref = lambda r: {"label": r, "ref": r, "sha": "0" * 40, "repo_id": 12, "repo": None}  # noqa: E731
        return {"id": it["id"], "url": f"{ROOT}/{owner}/{repo}/pulls/{n}", "number": n,
                "user": self.user_json(it["user"]), "title": it["title"], "body": it["body"],
                "labels": [_label(lb) for lb in it["labels"]], "milestone": None,
                "assignee": None, "assignees": [], "requested_reviewers": [],
                "requested_reviewers_teams": [], "state": it["state"], "draft": False,
                "is_locked": False, "comments": len(self.repos[(owner, repo)]["comments"][n]),
                "additions": 0, "deletions": 0, "changed_files": 0,
                "html_url": f"{ROOT}/{owner}/{repo}/pulls/{n}",
                "diff_url": f"{ROOT}/{owner}/{repo}/pulls/{n}.diff",
                "patch_url": f"{ROOT}/{owner}/{repo}/pulls/{n}.patch", "mergeable": True,
                "merged": pr["merged"], "merged_at": None, "merge_commit_sha": None,
                "merged_by": None, "allow_maintainer_edit": False, "base": ref(pr["base"]),
                "head": ref(pr["head"]), "merge_base": "0" * 40, "due_date": None,
                "created_at": it["created_at"], "updated_at": it["created_at"],
                "closed_at": None, "pin_order": 0}

    def comment_json(self, owner: str, repo: str, number: int, c: dict) -> dict:
        return {"id": c["id"], "html_url": f"{ROOT}/{owner}/{repo}/issues/{number}#issuecomment-{c['id']}",
                "pull_request_url": "", "issue_url": f"{ROOT}/{owner}/{repo}/issues/{number}",
                "user": self.user_json(c["user"]), "original_author": "",
                "original_author_id": 0, "body": c["body"], "assets": [],
                "created_at": c["created_at"], "updated_at": c["created_at"]}

    # ---- webhooks
    def deliver_webhook(self, url: str, event: str, event_type: str, payload: dict | bytes,
                        secret: str | bytes, *, timeout: float = 5.0) -> tuple[int, bytes]:
        body = payload if isinstance(payload, bytes) else gitea_json(payload)
        return deliver(url, event, event_type, body, secret, timeout=timeout)


def deliver(url: str, event: str, event_type: str, body: bytes, secret: str | bytes, *,
            timeout: float = 5.0, delivery_id: str | None = None) -> tuple[int, bytes]:
    """POST `body` to `url` with every header Gitea sends; returns (status, body)."""
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, body, hashlib.sha256).hexdigest() if key else ""
    sha1 = hmac.new(key, body, hashlib.sha1).hexdigest() if key else ""
    did = delivery_id or str(uuid.uuid4())
    headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1",
               "Accept-Encoding": "gzip", "X-Gitea-Hook-Installation-Target-Type": "repository",
               "X-GitHub-Hook-Installation-Target-Type": "repository",
               "X-Hub-Signature": f"sha1={sha1}", "X-Hub-Signature-256": f"sha256={sig}"}
    for p in ("Gitea", "Gogs", "GitHub"):
        headers[f"X-{p}-Delivery"] = did
        headers[f"X-{p}-Event"] = event
        headers[f"X-{p}-Event-Type"] = event_type
    headers["X-Gitea-Signature"] = headers["X-Gogs-Signature"] = sig
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def _label(name: str) -> dict:
    return {"id": abs(hash(name)) % 1000, "name": name, "exclusive": False, "is_archived": False,
            "color": "ee0701", "description": "", "url": ""}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


import urllib.error  # noqa: E402  (after urllib.request, for HTTPError)
from bot_bottle.demo_support._fake_gitea_git import GitRepos  # noqa: E402
from bot_bottle.demo_support._fake_gitea_handler import _Handler  # noqa: E402
