"""Gitea REST adapter: `GiteaClient` (one private `_request`: auth, JSON, retries, error
mapping, no redirects) and `GiteaForge`, the `Forge` for one repository.

Standard library only (`urllib.request`). The token is never logged.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from bot_bottle.contrib.forge.base import (
    Comment, ForgeAuthError, ForgeError, ForgeNotFound, ForgeUnavailable,
    ForgeValidationError, Issue, PullRequest, User,
)

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH"})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None  # urllib then raises HTTPError with the 3xx status


class Response:
    """Status, headers and parsed JSON body (None when empty)."""

    def __init__(self, status: int, headers: dict[str, str], data: Any) -> None:
        self.status = status
        self.headers = headers
        self.data = data


class GiteaClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"GiteaClient({self.base_url!r})"

    def get(self, path: str, **kw: Any) -> Response:
        return self._request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Response:
        return self._request("POST", path, body=body, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> Response:
        return self._request("PATCH", path, body=body, **kw)

    def _request(self, method: str, path: str, *, body: Any = None,
                 ok: tuple[int, ...] = (200, 201, 204)) -> Response:
        url = f"{self.base_url}/api/v1{path}"
        data = None if body is None else json.dumps(body).encode()
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        last: ForgeError | None = None
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.backoff * (2 ** (attempt - 1)))
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Authorization", f"token {self._token}")
            req.add_header("Accept", "application/json")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    return self._parse(resp.status, dict(resp.headers), resp.read(), method, path)
            except urllib.error.HTTPError as exc:
                with exc:
                    raw = exc.read() if exc.fp else b""
                    err = self._map(exc.code, raw, method, path, dict(exc.headers or {}))
                if exc.code in ok:
                    return self._parse(exc.code, dict(exc.headers or {}), raw, method, path)
                if not isinstance(err, ForgeUnavailable):
                    raise err from exc
                last = err
            except (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException,
                    ValueError) as exc:
                if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError):
                    raise
                reason = getattr(exc, "reason", exc)
                last = ForgeUnavailable(f"{method} {path}: {type(reason).__name__}: {reason}")
                last.__cause__ = exc
            log.warning("gitea %s %s failed (attempt %d/%d): %s",
                        method, path, attempt + 1, attempts, last)
        assert last is not None
        raise last

    @staticmethod
    def _parse(status: int, headers: dict[str, str], raw: bytes, method: str, path: str) -> Response:
        try:
            data = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError as exc:
            raise ForgeUnavailable(f"{method} {path}: answer is not JSON", status=status) from exc
        return Response(status, headers, data)

    @staticmethod
    def _map(status: int, raw: bytes, method: str, path: str, headers: dict[str, str]) -> ForgeError:
        try:
            message = (json.loads(raw) or {}).get("message", "") if raw.strip() else ""
        except (json.JSONDecodeError, AttributeError):
            message = raw[:200].decode("utf-8", "replace")
        what = f"{method} {path}: HTTP {status}" + (f": {message}" if message else "")
        if status in (401, 403):
            return ForgeAuthError(what, status=status)
        if 300 <= status < 400:
            loc = headers.get("Location", "")
            return ForgeAuthError(f"{what}: redirect to {loc} not followed", status=status)
        if status == 404:
            return ForgeNotFound(what, status=status)
        if status in (400, 409, 422):
            return ForgeValidationError(what, status=status)
        if status >= 500 or status == 429:
            return ForgeUnavailable(what, status=status)
        return ForgeError(what, status=status)


def _user(d: dict | None) -> User:
    d = d or {}
    return User(id=int(d.get("id", 0)), login=str(d.get("login", "")))


def parse_issue(d: dict) -> Issue:
    return Issue(number=d["number"], title=d.get("title", ""), body=d.get("body") or "",
                 state=d.get("state", "open"), user=_user(d.get("user")),
                 labels=tuple(lb["name"] for lb in d.get("labels") or ()),
                 assignees=tuple(u["login"] for u in d.get("assignees") or ()),
                 is_pull=d.get("pull_request") is not None, html_url=d.get("html_url", ""))


def parse_pr(d: dict) -> PullRequest:
    return PullRequest(number=d["number"], title=d.get("title", ""), body=d.get("body") or "",
                       state=d.get("state", "open"), merged=bool(d.get("merged")),
                       head_ref=(d.get("head") or {}).get("ref", ""),
                       base_ref=(d.get("base") or {}).get("ref", ""),
                       user=_user(d.get("user")), html_url=d.get("html_url", ""))


def parse_comment(d: dict) -> Comment:
    return Comment(id=d["id"], body=d.get("body") or "", user=_user(d.get("user")),
                   created_at=d.get("created_at", ""), html_url=d.get("html_url", ""))


class GiteaForge:
    """The `Forge` for `owner/repo` on a Gitea server."""

    def __init__(self, client: GiteaClient, owner: str, repo: str) -> None:
        self.client = client
        self.owner = owner
        self.repo = repo

    def _r(self, rest: str) -> str:
        q = urllib.parse.quote
        return f"/repos/{q(self.owner, safe='')}/{q(self.repo, safe='')}{rest}"

    def read_issue(self, number: int) -> Issue:
        return parse_issue(self.client.get(self._r(f"/issues/{int(number)}")).data)

    def read_pr(self, number: int) -> PullRequest:
        return parse_pr(self.client.get(self._r(f"/pulls/{int(number)}")).data)

    def read_comments(self, number: int) -> list[Comment]:
        data = self.client.get(self._r(f"/issues/{int(number)}/comments")).data or []
        return [parse_comment(c) for c in data]

    def post_comment(self, number: int, body: str) -> Comment:
        resp = self.client.post(self._r(f"/issues/{int(number)}/comments"), {"body": body})
        return parse_comment(resp.data)

    def update_description(self, number: int, body: str) -> None:
        self.client.patch(self._r(f"/issues/{int(number)}"), {"body": body})

    def open_pr(self, *, title: str, body: str, head: str, base: str) -> PullRequest:
        resp = self.client.post(self._r("/pulls"),
                                {"title": title, "body": body, "head": head, "base": base})
        return parse_pr(resp.data)

    def is_org_member(self, org: str, user: str) -> bool:
        q = urllib.parse.quote
        try:
            self.client.get(f"/orgs/{q(org, safe='')}/members/{q(user, safe='')}")
        except ForgeNotFound:
            return False
        except ForgeAuthError as exc:
            if exc.status in (302, 303):
                raise ForgeAuthError(
                    f"the token cannot see private membership of org {org!r} "
                    f"(Gitea redirected to public members; the token's user must be a member)",
                    status=exc.status) from exc
            raise
        return True

    def user_permission(self, user: str) -> str:
        q = urllib.parse.quote
        try:
            resp = self.client.get(self._r(f"/collaborators/{q(user, safe='')}/permission"))
        except ForgeNotFound:
            return "none"
        return str((resp.data or {}).get("permission", "none"))
