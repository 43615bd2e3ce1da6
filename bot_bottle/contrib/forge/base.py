"""The forge port: what bot-bottle needs from a forge, its value types, its errors, and the
`ScopedForge` that confines an agent's writes to the issue it was assigned.

A `Forge` is bound to one repository (owner/repo). Values are frozen dataclasses built at the
adapter boundary; nothing here does I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from bot_bottle.errors import BotBottleError


class ForgeError(BotBottleError):
    """Root of the forge layer. `status` is the HTTP status that caused it, when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ForgeNotFound(ForgeError):
    """The repository, issue, PR, user or org does not exist (or is invisible to the token)."""


class ForgeAuthError(ForgeError):
    """The token is missing, invalid, lacks a scope, or cannot see what was asked (401/403/303)."""


class ForgeUnavailable(ForgeError):
    """The forge did not answer usefully: connection error, timeout, 5xx."""


class ForgeValidationError(ForgeError):
    """The forge refused the request body (422, or 400)."""


class ForgeScopeError(ForgeError, PermissionError):
    """A write outside the issue (and its PRs) that a scoped forge was given."""


@dataclass(frozen=True)
class User:
    id: int
    login: str


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str
    state: str  # "open" | "closed"
    user: User
    labels: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    is_pull: bool = False
    html_url: str = ""


@dataclass(frozen=True)
class PullRequest:
    number: int
    title: str
    body: str
    state: str  # "open" | "closed"
    merged: bool
    head_ref: str
    base_ref: str
    user: User
    html_url: str = ""


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    user: User
    created_at: str = ""
    html_url: str = ""


class Forge(Protocol):
    """One repository on a forge. Adapters raise `ForgeError` subclasses, never raw I/O errors."""

    owner: str
    repo: str

    def read_issue(self, number: int) -> Issue: ...

    def read_pr(self, number: int) -> PullRequest: ...

    def read_comments(self, number: int) -> list[Comment]: ...

    def post_comment(self, number: int, body: str) -> Comment: ...

    def update_description(self, number: int, body: str) -> None: ...

    def open_pr(self, *, title: str, body: str, head: str, base: str) -> PullRequest: ...

    def is_org_member(self, org: str, user: str) -> bool: ...

    def user_permission(self, user: str) -> str:
        """One of "none", "read", "write", "admin", "owner"."""
        ...


class ScopedForge:
    """Reads pass through; writes only to the assigned issue and the PRs opened through this
    object (or granted with `allow_pr`, e.g. after a restart). Everything else raises
    `ForgeScopeError`. Safe to share between threads."""

    def __init__(self, forge: Forge, owner: str, repo: str, issue_number: int,
                 pr_numbers: tuple[int, ...] = ()) -> None:
        if (forge.owner, forge.repo) != (owner, repo):
            raise ForgeScopeError(
                f"scoped forge for {owner}/{repo} cannot wrap a forge for {forge.owner}/{forge.repo}")
        self._forge = forge
        self.owner = owner
        self.repo = repo
        self.issue_number = issue_number
        self._prs = set(pr_numbers)
        self._lock = threading.Lock()

    @property
    def pr_numbers(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(self._prs))

    def allow_pr(self, number: int) -> None:
        with self._lock:
            self._prs.add(number)

    def in_scope(self, number: int) -> bool:
        with self._lock:
            return number == self.issue_number or number in self._prs

    def _check(self, number: int, what: str) -> None:
        if not self.in_scope(number):
            raise ForgeScopeError(
                f"{what} on {self.owner}/{self.repo}#{number} is outside this run's scope "
                f"(issue #{self.issue_number} and its PRs)")

    # reads: anywhere in the repository
    def read_issue(self, number: int) -> Issue:
        return self._forge.read_issue(number)

    def read_pr(self, number: int) -> PullRequest:
        return self._forge.read_pr(number)

    def read_comments(self, number: int) -> list[Comment]:
        return self._forge.read_comments(number)

    def is_org_member(self, org: str, user: str) -> bool:
        return self._forge.is_org_member(org, user)

    def user_permission(self, user: str) -> str:
        return self._forge.user_permission(user)

    # writes: scoped
    def post_comment(self, number: int, body: str) -> Comment:
        self._check(number, "comment")
        return self._forge.post_comment(number, body)

    def update_description(self, number: int, body: str) -> None:
        self._check(number, "description edit")
        self._forge.update_description(number, body)

    def open_pr(self, *, title: str, body: str, head: str, base: str) -> PullRequest:
        pr = self._forge.open_pr(title=title, body=body, head=head, base=base)
        self.allow_pr(pr.number)
        return pr
