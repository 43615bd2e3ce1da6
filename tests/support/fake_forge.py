"""`FakeForge`: an in-memory `Forge` (dicts of issues, PRs, comments, org members and
permissions) for orchestrator tests; checked against GiteaForge by a contract mixin."""

from __future__ import annotations

import itertools
import threading

from bot_bottle.contrib.forge.base import (
    Comment, ForgeNotFound, ForgeValidationError, Issue, PullRequest, User,
)


class FakeForge:
    def __init__(self, owner: str = "acme", repo: str = "widgets", *, viewer: str = "claude-bot") -> None:
        self.owner, self.repo, self.viewer = owner, repo, viewer
        self.issues: dict[int, Issue] = {}
        self.prs: dict[int, PullRequest] = {}
        self.comments: dict[int, list[Comment]] = {}
        self.org_members: dict[str, set[str]] = {}
        self.permissions: dict[str, str] = {}
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1001)
        self._users: dict[str, int] = {}
        self._lock = threading.Lock()

    def _user(self, login: str) -> User:
        return User(self._users.setdefault(login, len(self._users) + 2), login)

    # setup
    def add_issue(self, title: str, body: str = "", *, user: str = "alice",
                  labels: tuple[str, ...] = (), assignees: tuple[str, ...] = ()) -> int:
        with self._lock:
            n = next(self._numbers)
            self.issues[n] = Issue(n, title, body, "open", self._user(user), tuple(labels),
                                   tuple(assignees))
            self.comments[n] = []
            return n

    def add_comment(self, number: int, body: str, user: str) -> Comment:
        with self._lock:
            c = Comment(next(self._ids), body, self._user(user))
            self.comments[number].append(c)
            return c

    def add_org_member(self, org: str, user: str) -> None:
        self.org_members.setdefault(org, set()).add(user)

    def set_permission(self, user: str, permission: str) -> None:
        self.permissions[user] = permission

    # Forge
    def read_issue(self, number: int) -> Issue:
        with self._lock:
            if number in self.issues:
                return self.issues[number]
            raise ForgeNotFound(f"issue #{number} not found", status=404)

    def read_pr(self, number: int) -> PullRequest:
        with self._lock:
            if number in self.prs:
                return self.prs[number]
            raise ForgeNotFound(f"PR #{number} not found", status=404)

    def read_comments(self, number: int) -> list[Comment]:
        with self._lock:
            if number not in self.comments:
                raise ForgeNotFound(f"issue #{number} not found", status=404)
            return list(self.comments[number])

    def post_comment(self, number: int, body: str) -> Comment:
        if not body:
            raise ForgeValidationError("[Body]: Required", status=422)
        self.read_comments(number)
        return self.add_comment(number, body, self.viewer)

    def update_description(self, number: int, body: str) -> None:
        with self._lock:
            if number in self.prs:
                p = self.prs[number]
                self.prs[number] = PullRequest(p.number, p.title, body, p.state, p.merged,
                                               p.head_ref, p.base_ref, p.user, p.html_url)
            if number not in self.issues:
                raise ForgeNotFound(f"issue #{number} not found", status=404)
            i = self.issues[number]
            self.issues[number] = Issue(i.number, i.title, body, i.state, i.user, i.labels,
                                        i.assignees, i.is_pull, i.html_url)

    def open_pr(self, *, title: str, body: str, head: str, base: str) -> PullRequest:
        if not (title and head and base):
            raise ForgeValidationError("title, head and base are required", status=422)
        with self._lock:
            n = next(self._numbers)
            u = self._user(self.viewer)
            pr = PullRequest(n, title, body, "open", False, head, base, u)
            self.prs[n] = pr
            self.issues[n] = Issue(n, title, body, "open", u, is_pull=True)
            self.comments[n] = []
            return pr

    def is_org_member(self, org: str, user: str) -> bool:
        return user in self.org_members.get(org, set())

    def user_permission(self, user: str) -> str:
        return self.permissions.get(user, "none")
