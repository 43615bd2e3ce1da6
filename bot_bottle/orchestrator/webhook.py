"""The orchestrator's HTTP decisions: `WebhookApp.handle(method, path, headers, body)` owns
every route (`POST /webhook`, `/healthz`, the HTML pages `/` and `/run/<id>`, the JSON
`/runs…`, `/metrics`) and returns a
`Response`; `StoreViews` (`webhook_views`, re-exported here) turns store rows into the
read-only pages. The socket side lives in `http_server.py` and `http_loop.py` (`make_server`
is re-exported here).

A delivery is answered 2xx only once the store says it is durable: `handle` waits for
`store.record_delivery`; the event loop's `quick`/`begin` path (`http_loop`) checks it on the
loop's thread (`prepare`, the same checks), hands it to `store.record_delivery_async` and
makes the answer (`finish`) when the writer calls back after its commit. The app then calls
the injected `wake()`, which must only signal the dispatcher. The app never
answers 5xx except 503, whatever the input. The forge's signature check is injected (by
bootstrap) as `verify(body, signature_hex) -> bool`, so this module imports no adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from bot_bottle.orchestrator.events import HANDLED_TYPES, comment_key
from bot_bottle.orchestrator.pages import DEFAULT_FILTER, FILTERS, PAGE_CSP
from bot_bottle.orchestrator.http_server import MAX_BODY, loads_json, make_server  # noqa: F401
from bot_bottle.orchestrator.http_transport import Response
from bot_bottle.orchestrator.log_tail import printable
from bot_bottle.orchestrator.webhook_views import StoreViews  # noqa: F401  (the default views)

log = logging.getLogger(__name__)

JSON = "application/json"
HTML = "text/html; charset=utf-8"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_RUN_PATH = re.compile(r"^/runs/([^/]+)(/provenance)?$")
_PAGE_PATH = re.compile(r"^/run/([^/]+)$")  # a run's HTML page; its JSON stays under /runs
_RUN_ID = re.compile(r"^[0-9]{1,18}$")
# the transport adds `nosniff` to every answer; the page also may not be framed or run
# anything but its own style sheet
_HTML_HEADERS = (("Content-Security-Policy", PAGE_CSP), ("X-Frame-Options", "DENY"))


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, JSON, json.dumps(payload).encode(), headers)


def _status(status: int, word: str, reason: str | None = None, allow: str | None = None) -> Response:
    payload = {"status": word, **({"reason": reason} if reason else {})}
    return json_response(status, payload, (("Allow", allow),) if allow else ())


_ACCEPTED = _status(202, "accepted")  # the common answer, made once (a Response is frozen)


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery that passed every check, to be stored (`WebhookApp.prepare`)."""

    delivery: str
    event: str
    body: bytes
    payload: dict
    tag: str  # `delivery=… event=…` for its log lines
    received_at: float
    comment_key: str | None


class WebhookApp:
    """All HTTP decisions. `store` needs `record_delivery` (`handle`), `record_delivery_async`
    (`begin`) and `ping`; `views` needs
    `dashboard([show])`, `run_page(id)`, `runs()`, `run(id)`, `provenance(id)`, `metrics()`
    (default: `StoreViews`)."""

    def __init__(self, store, *, verify: Callable[[bytes, str], bool],
                 wake: Callable[[], None] = lambda: None, views=None,
                 is_handled: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.time, payloads=None) -> None:
        self._store = store
        self._payloads = payloads  # `events.Payloads`: the parsed body, for the dispatcher
        self._verify = verify
        self._wake = wake
        self._views = views if views is not None else StoreViews(store, clock)
        self._is_handled = is_handled
        self._clock = clock
        from bot_bottle.orchestrator.metrics import WebhookMetrics
        self.webhook_metrics = WebhookMetrics()

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        """Called by the transport after every answer, its own rejections (411, 413, 421,
        408) included: answers on `/webhook` are counted by code and timed."""
        if path.split("?", 1)[0] == "/webhook":
            self.webhook_metrics.observe(status, seconds)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        try:
            return self._route(method, path, {k.lower(): v for k, v in headers.items()}, body)
        except Exception:  # the app answers 503 at worst, never a stack trace
            log.exception("http %s %s failed", method, path)
            return _status(503, "error", "internal error")

    def _route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/webhook":
            if method != "POST":
                return _status(405, "error", "method not allowed", allow="POST")
            return self._webhook(headers, body)
        if (path in ("/", "/healthz", "/runs", "/metrics") or _RUN_PATH.match(path)
                or _PAGE_PATH.match(path)):
            if method != "GET":
                return _status(405, "error", "method not allowed", allow="GET")
            return self._get(path, query)
        return _status(404, "error", "not found")

    # -- POST /webhook -------------------------------------------------------------------

    def _webhook(self, headers: dict[str, str], body: bytes) -> Response:
        step = self.prepare(headers, body)
        if isinstance(step, Response):
            return step
        self._hand_over(step)
        try:
            fresh = self._store.record_delivery(step.delivery, step.event, step.body,
                                                step.received_at, comment_key=step.comment_key)
        except Exception as exc:  # StoreError or worse: Gitea must retry, so never a 2xx
            return self.finish(step, None, exc)
        return self.finish(step, fresh, None)

    def quick(self, method: str, target: str) -> bool:
        """Whether `begin` answers this request without blocking (the event loop calls it on
        its own thread): `POST /webhook`, whose store write completes through a callback."""
        return method == "POST" and target == "/webhook"

    def begin(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
              later: Callable[[Callable[[], Response]], None]) -> Response | None:
        """`handle` for a `quick` request, without waiting for the disk: a refusal is returned
        at once; an accepted delivery is handed to the store's writer and None returned, and
        once it is durable (or failed) `later(answer)` is called, on the writer's thread,
        with a function that makes the answer (the caller runs it on its own thread)."""
        try:
            step = self.prepare({k.lower(): v for k, v in headers.items()}, body)
            if isinstance(step, Response):
                return step

            def stored(fresh: bool | None, error: BaseException | None) -> None:
                later(lambda: self.finish(step, fresh, error))
            self._hand_over(step)
            try:
                self._store.record_delivery_async(step.delivery, step.event, step.body,
                                                  step.received_at, comment_key=step.comment_key,
                                                  callback=stored)
            except Exception as exc:  # a closed store: refused now, never a 2xx
                return self.finish(step, None, exc)
            return None
        except Exception:  # as `handle`: 503 at worst, never a stack trace
            log.exception("http %s %s failed", method, target)
            return _status(503, "error", "internal error")

    def prepare(self, headers: Mapping[str, str], body: bytes) -> Response | Delivery:
        """Every check of `POST /webhook` before the store: a refusal or an ignored delivery
        is its `Response`; one to store is a `Delivery` (its JSON parsed, once), whose answer
        `finish` makes once the store has answered. `headers` have lower-case names."""
        if len(body) > MAX_BODY:
            return _status(413, "error", "body over 1 MiB")
        event = (_first(headers, "x-gitea-event-type", "x-forgejo-event-type")
                 or _first(headers, "x-gitea-event", "x-forgejo-event"))
        delivery = (_first(headers, "x-gitea-delivery", "x-forgejo-delivery")
                    or hashlib.sha256(body).hexdigest())
        tag = f"delivery={_clip(delivery)} event={_clip(event or '-')}"
        signature = _first(headers, "x-gitea-signature", "x-forgejo-signature")
        if not signature:
            hub = headers.get("x-hub-signature-256", "").strip()
            signature = hub[7:] if hub.lower().startswith("sha256=") else ""
        if not signature or not self._check(body, signature):
            log.warning("webhook %s rejected: missing or wrong signature", tag)
            return _status(401, "error", "missing or wrong signature")
        try:
            payload = loads_json(body)
        except ValueError as exc:
            reason = str(exc) if "nested deeper" in str(exc) else "body is not valid JSON"
            log.warning("webhook %s rejected: %s", tag, reason)
            return _status(400, "error", reason)
        if not isinstance(payload, dict):
            log.warning("webhook %s rejected: body is not a JSON object", tag)
            return _status(400, "error", "body is not a JSON object")
        if not event:
            log.info("webhook %s %s ignored: no event type header", tag, _where(payload))
            return _status(202, "ignored", "no event type header")
        if not self._handles(event):
            log.info("webhook %s %s ignored: unhandled event type", tag, _where(payload))
            return _status(202, "ignored", f"event type {_clip(event)!r} is not handled")
        return Delivery(delivery, event, body, payload, tag, self._clock(),
                        comment_key(event, payload))

    def finish(self, step: Delivery, fresh: bool | None, error: BaseException | None) -> Response:
        """The answer to a prepared delivery once the store answered: `fresh` (stored now) or
        not (a duplicate), or the store's `error` (503: Gitea must retry, so never a 2xx)."""
        if error is not None or not fresh:  # no row for the dispatcher: nothing to hand over
            if self._payloads is not None:
                self._payloads.take(step.delivery, step.body)
        if error is not None:
            log.error("webhook %s %s not stored: %s", step.tag, _where(step.payload), error)
            return _status(503, "error", "store unavailable")
        if not fresh:
            log.info("webhook %s %s duplicate", step.tag, _where(step.payload))
            return _status(200, "duplicate")
        # the dispatcher's line (id, event, outcome) is the delivery's one line at INFO
        if log.isEnabledFor(logging.DEBUG):
            log.debug("webhook %s %s accepted", step.tag, _where(step.payload))
        try:
            self._wake()  # only signals the dispatcher; launches never run on this thread
        except Exception:  # stored already: the dispatcher's next tick will find it
            log.exception("webhook %s wake failed", step.tag)
        return _ACCEPTED

    def _hand_over(self, step: Delivery) -> None:
        """The parsed body, for the dispatcher, before the row can be committed: it may read
        the row the moment it is (a payload put after the commit came too late, was never
        taken, and 256 of them stayed in memory)."""
        if self._payloads is not None:
            self._payloads.put(step.delivery, step.body, step.payload)

    def _check(self, body: bytes, signature: str) -> bool:
        try:
            return bool(self._verify(body, signature))
        except Exception:
            log.exception("signature check raised")
            return False

    def _handles(self, event: str) -> bool:
        if event in HANDLED_TYPES:
            return True
        return bool(self._is_handled and self._is_handled(event))

    # -- GET pages -----------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]]) -> Response:
        if path == "/healthz":
            try:
                ok = bool(self._store.ping())
            except Exception as exc:
                log.error("healthz: store ping failed: %s", exc)
                ok = False
            if not ok:
                log.warning("healthz: store does not answer")
                return _status(503, "error", "store unavailable")
            return _status(200, "ok")
        match = _RUN_PATH.match(path) or _PAGE_PATH.match(path)
        if match and not _RUN_ID.match(match.group(1)):
            return _status(400, "error", "run id must be a non-negative integer")
        try:
            if path == "/":
                show = _dashboard_filter(query)
                # the default page needs no argument (a views object may take none)
                page = self._views.dashboard(show) if show != DEFAULT_FILTER else self._views.dashboard()
                return Response(200, HTML, page.encode(), _HTML_HEADERS)
            if path == "/metrics":
                text = self._views.metrics() + "\n".join(self.webhook_metrics.text()) + "\n"
                return Response(200, PROMETHEUS, text.encode())
            if path == "/runs":
                show_all = query.get("all", ["0"])[-1] not in ("", "0", "false", "no")
                runs = self._views.runs(include_destroyed=True) if show_all else self._views.runs()
                return _json_text(runs)
            run_id = int(match.group(1))
            if path.startswith("/run/"):
                page = self._views.run_page(run_id)
                if page is None:
                    return _status(404, "error", f"no run {run_id}")
                return Response(200, HTML, page.encode(), _HTML_HEADERS)
            data = self._views.provenance(run_id) if match.group(2) else self._views.run(run_id)
        except Exception:
            log.exception("view %s failed", path)
            return _status(503, "error", "store unavailable")
        if data is None:
            return _status(404, "error", f"no run {run_id}")
        return _json_text(data)


def _dashboard_filter(query: dict[str, list[str]]) -> str:
    """`?show=live|active|failed|all`; `?all=1` (as on `/runs`) means `all`; else the default."""
    if query.get("all", ["0"])[-1] not in ("", "0", "false", "no"):
        return "all"
    show = query.get("show", [DEFAULT_FILTER])[-1]
    return show if show in FILTERS else DEFAULT_FILTER


def _json_text(data) -> Response:
    """A view's answer: JSON text already made (the runs documents), else a value to encode."""
    if isinstance(data, str):
        return Response(200, JSON, data.encode())
    return json_response(200, data)


def _first(headers: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = (headers.get(name) or "").strip()
        if value:
            return value
    return ""


def _clip(text: str, limit: int = 80) -> str:
    """A header value made safe for one log line."""
    return printable(text, limit).replace(" ", "_") or "-"


def _where(payload: dict) -> str:
    """`repo= issue=` for log lines; tolerant of any shape."""
    repo = payload.get("repository")
    repo = repo.get("full_name") if isinstance(repo, dict) else None
    number = None
    for key in ("issue", "pull_request"):
        obj = payload.get(key)
        if isinstance(obj, dict) and number is None:
            number = obj.get("number")
    repo = _clip(repo) if isinstance(repo, str) else "-"
    return f"repo={repo} issue={number if isinstance(number, int) else '-'} run=-"
