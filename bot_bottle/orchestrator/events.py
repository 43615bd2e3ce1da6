"""Gitea webhook deliveries → frozen event values (the parsing boundary of the orchestrator).

This module owns the mapping from `X-Gitea-Event-Type` (or Forgejo's copy) plus the payload's
`action` to the three event values of docs/architecture.md §4, and nothing else: no trust, no
targeting, no I/O. Three outcomes:

- an `IssueEvent`, `CommentEvent` or `PullRequestEvent` for a delivery we act on;
- `None` for a delivery we do not act on; `explain_ignored` gives the reason, and
  `parse_event` logs it at DEBUG;
- `EventShapeError` when a delivery we would act on has a value of the wrong type or misses
  a field we need. No other exception escapes, whatever JSON value comes in.

Which deliveries are acted on (see `ACTED_ON`):
- issue types (`issues`, `issue_assign`, `issue_label`): `opened`, `assigned`,
  `label_updated` (launch checks) and `closed` (destroy). `unassigned`, `label_cleared`,
  `edited`, `reopened`, ... are ignored: none of them can start or end a run.
- comment types (`issue_comment`, `pull_request_comment`): `created` only. An edit or delete
  must not re-prompt an agent.
- pull-request types (`pull_request`, `pull_request_assign`, `pull_request_label`,
  `pull_request_sync`): `opened` and `closed` (a merge is `closed` with `merged`).
- reviews (`pull_request_review_*`), pushes and everything else: ignored.

`Payloads` hands the webhook's parsed body to the dispatcher in-process, so a delivery's
JSON is parsed once (`classify_delivery(..., payload=)`); after a restart, or past its bound,
the stored body is parsed again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from bot_bottle.orchestrator.model import OrchestratorError

log = logging.getLogger(__name__)


class EventShapeError(OrchestratorError):
    """A delivery of a type we act on whose JSON does not have the shape Gitea sends."""


@dataclass(frozen=True)
class IssueEvent:
    action: str
    owner: str
    repo: str
    number: int
    title: str
    body: str
    labels: tuple[str, ...]
    assignees: tuple[str, ...]
    sender: str
    state: str
    # Gitea's issue object carries a non-null `pull_request` when the "issue" is a PR.
    is_pull: bool = False


@dataclass(frozen=True)
class CommentEvent:
    action: str
    owner: str
    repo: str
    number: int
    is_pull: bool
    comment_id: int
    body: str
    author: str


@dataclass(frozen=True)
class PullRequestEvent:
    action: str
    owner: str
    repo: str
    number: int
    title: str
    body: str
    merged: bool
    head_ref: str
    base_ref: str
    author: str
    sender: str


Event = IssueEvent | CommentEvent | PullRequestEvent

ISSUE_TYPES = frozenset({"issues", "issue_assign", "issue_label"})
COMMENT_TYPES = frozenset({"issue_comment", "pull_request_comment"})
PULL_TYPES = frozenset({"pull_request", "pull_request_assign", "pull_request_label",
                        "pull_request_sync"})
# what the webhook stores: of the pull-request family only `pull_request` itself carries an
# action we act on (closed); the others' deliveries would only be stored to be ignored
HANDLED_TYPES = ISSUE_TYPES | COMMENT_TYPES | {"pull_request"}

# Actions are accepted across a family rather than per header value, because older Gitea
# versions and some proxies put the coarse `X-Gitea-Event` value where the type should be.
ACTED_ON: dict[frozenset[str], frozenset[str]] = {
    ISSUE_TYPES: frozenset({"opened", "assigned", "label_updated", "closed"}),
    COMMENT_TYPES: frozenset({"created"}),
    PULL_TYPES: frozenset({"opened", "closed"}),
}


def parse_delivery(event_type: str, body: bytes) -> Event | None:
    """Decode a raw delivery body (bytes as received) and parse it."""
    result = classify_delivery(event_type, body)
    return None if isinstance(result, str) else result


_UNPARSED = object()


def classify_delivery(event_type: str, body: bytes, payload: object = _UNPARSED) -> Event | str:
    """Decode and parse once: the event, or why it is not acted on (for the caller's log).
    `payload` is `body` already parsed (by the webhook, `Payloads`): it is not parsed again."""
    if payload is _UNPARSED:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise EventShapeError(f"delivery body is not JSON: {exc}") from exc
    return _classify(event_type, payload)


class Payloads:
    """Parsed bodies of stored deliveries by delivery id, from the webhook to the dispatcher:
    at most `limit` (the oldest go first; a lagging dispatcher parses those itself). A body
    is handed over only to a delivery with the very same bytes."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._items: OrderedDict[str, tuple[bytes, object]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, delivery_id: str, body: bytes, payload: object) -> None:
        with self._lock:
            self._items[delivery_id] = (body, payload)
            self._items.move_to_end(delivery_id)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def take(self, delivery_id: str | None, body: bytes) -> object:
        """The payload parsed from `body` and forgotten here, else `_UNPARSED`."""
        with self._lock:
            item = self._items.pop(delivery_id, None) if delivery_id else None
        if item is None or item[0] != body:
            return _UNPARSED
        return item[1]

    def __len__(self) -> int:
        return len(self._items)


def comment_key(event_type: str, payload: object) -> str | None:
    """The identity of a comment delivery whatever comment type its header names: the
    comment's id, its edit time and the action (`comment 77 created 2026-...`). Gitea sends
    one comment as `issue_comment` or `pull_request_comment`, so a replay under the other
    type must dedupe on this, not on the header. `None` for anything else or a bad shape."""
    event_type = event_type.strip().lower() if isinstance(event_type, str) else ""
    if event_type not in COMMENT_TYPES or not isinstance(payload, dict):
        return None
    comment = payload.get("comment")
    if not isinstance(comment, dict):
        return None
    cid = comment.get("id")
    if not isinstance(cid, int) or isinstance(cid, bool):
        return None
    edited = comment.get("updated_at") or comment.get("created_at") or ""
    action = payload.get("action")
    return (f"comment {cid} {action if isinstance(action, str) else ''} "
            f"{edited if isinstance(edited, str) else ''}")[:200]


def parse_event(event_type: str, payload: object) -> Event | None:
    """The event value for a delivery we act on; `None` (reason logged) for any other."""
    result = _classify(event_type, payload)
    if isinstance(result, str):
        log.debug("ignored %s delivery: %s", event_type, result)
        return None
    return result


def explain_ignored(event_type: str, payload: object) -> str | None:
    """Why `parse_event` returns `None` for this delivery; `None` if it is acted on.

    Raises `EventShapeError` exactly when `parse_event` does.
    """
    result = _classify(event_type, payload)
    return result if isinstance(result, str) else None


def _classify(event_type: str, payload: object) -> Event | str:
    event_type = event_type.strip().lower() if isinstance(event_type, str) else ""
    family = next((types for types in ACTED_ON if event_type in types), None)
    if family is None:
        return f"event type {event_type or '(none)'!r} is not handled"
    if not isinstance(payload, dict):
        raise EventShapeError(f"{event_type} payload is {_kind(payload)}, not an object")
    action = _str(payload, "action", "payload")
    if action not in ACTED_ON[family]:
        return f"{event_type} action {action!r} is not acted on"
    owner, repo = _repository(payload)
    if family is ISSUE_TYPES:
        return _issue_event(action, owner, repo, payload)
    if family is COMMENT_TYPES:
        return _comment_event(event_type, action, owner, repo, payload)
    return _pull_event(action, owner, repo, payload)


def _issue_event(action: str, owner: str, repo: str, payload: dict) -> IssueEvent:
    issue = _obj(payload, "issue", "payload")
    return IssueEvent(
        action=action, owner=owner, repo=repo,
        number=_number(issue, "issue"),
        title=_str(issue, "title", "issue"),
        body=_text(issue, "body", "issue"),
        labels=_names(issue, "labels", "name", "issue"),
        assignees=_names(issue, "assignees", "login", "issue"),
        sender=_login(payload, "sender", "payload"),
        state=_str(issue, "state", "issue"),
        is_pull=_optional_obj(issue, "pull_request", "issue") is not None,
    )


def _comment_event(event_type: str, action: str, owner: str, repo: str,
                   payload: dict) -> CommentEvent:
    issue = _obj(payload, "issue", "payload")
    comment = _obj(payload, "comment", "payload")
    is_pull = payload.get("is_pull")
    if is_pull is None:  # not sent by every version: fall back to the other PR indicators
        is_pull = (event_type == "pull_request_comment" or "pull_request" in payload
                   or _optional_obj(issue, "pull_request", "issue") is not None)
    elif not isinstance(is_pull, bool):
        raise EventShapeError(f"payload.is_pull is {_kind(is_pull)}, not a boolean")
    return CommentEvent(
        action=action, owner=owner, repo=repo,
        number=_number(issue, "issue"),
        is_pull=is_pull,
        comment_id=_int(comment, "id", "comment"),
        body=_text(comment, "body", "comment"),
        author=_login(comment, "user", "comment"),
    )


def _pull_event(action: str, owner: str, repo: str, payload: dict) -> PullRequestEvent:
    pull = _obj(payload, "pull_request", "payload")
    merged = pull.get("merged", False)
    if not isinstance(merged, bool):
        raise EventShapeError(f"pull_request.merged is {_kind(merged)}, not a boolean")
    return PullRequestEvent(
        action=action, owner=owner, repo=repo,
        number=_number(pull, "pull_request"),
        title=_str(pull, "title", "pull_request"),
        body=_text(pull, "body", "pull_request"),
        merged=merged,
        head_ref=_str(_obj(pull, "head", "pull_request"), "ref", "pull_request.head"),
        base_ref=_str(_obj(pull, "base", "pull_request"), "ref", "pull_request.base"),
        author=_login(pull, "user", "pull_request"),
        sender=_login(payload, "sender", "payload"),
    )


# ---- field readers: each names the path of the bad value in its error -------------------


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _obj(parent: dict, key: str, where: str) -> dict:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise EventShapeError(f"{where}.{key} is {_kind(value)}, not an object")
    return value


def _optional_obj(parent: dict, key: str, where: str) -> dict | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        raise EventShapeError(f"{where}.{key} is {_kind(value)}, not an object or null")
    return value


def _clean(value: str) -> str:
    """JSON may carry what neither an argv nor SQLite takes: a NUL, a lone surrogate escape.
    Both become U+FFFD here, at the boundary, so nothing downstream meets them."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value


def _str(parent: dict, key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise EventShapeError(f"{where}.{key} is {_kind(value)}, not a string")
    return _clean(value)


def _text(parent: dict, key: str, where: str) -> str:
    """A free-text field: missing or null reads as empty, anything else but a string is bad."""
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EventShapeError(f"{where}.{key} is {_kind(value)}, not a string")
    return _clean(value)


def _int(parent: dict, key: str, where: str) -> int:
    value = parent.get(key)
    if not isinstance(value, int) or isinstance(value, bool):  # bool is an int in Python
        raise EventShapeError(f"{where}.{key} is {_kind(value)}, not an integer")
    return value


def _number(parent: dict, where: str) -> int:
    number = _int(parent, "number", where)
    if number <= 0:
        raise EventShapeError(f"{where}.number is {number}, not a positive integer")
    return number


def _login(parent: dict, key: str, where: str) -> str:
    return _str(_obj(parent, key, where), "login", f"{where}.{key}")


def _repository(payload: dict) -> tuple[str, str]:
    repository = _obj(payload, "repository", "payload")
    return (_login(repository, "owner", "repository"),
            _str(repository, "name", "repository"))


def _names(parent: dict, key: str, field: str, where: str) -> tuple[str, ...]:
    """Names out of a list of objects; Gitea sends `null` for an empty list."""
    items = parent.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise EventShapeError(f"{where}.{key} is {_kind(items)}, not a list or null")
    names = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise EventShapeError(f"{where}.{key}[{index}] is {_kind(item)}, not an object")
        names.append(_str(item, field, f"{where}.{key}[{index}]"))
    return tuple(names)
