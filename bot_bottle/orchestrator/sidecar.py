"""The forge sidecar (architecture §2): an HTTP/1.1 server on a Unix socket through which an
agent reaches the forge, scoped to its run, plus `POST /done` written atomically into the
queue directory for the relay.

`SidecarApp.handle(method, path, token, body) -> (status, payload)` holds all decisions and
is tested without sockets; `SidecarServer` is the thin stdlib transport. Every text the agent
writes to the forge (a comment, a description, a PR's title and body) is first scanned with
`gate.secrets` for the run's token, the service's secrets (`FORGE_TOKEN`, the provider keys the
egress gate injects) and common token shapes; a hit is refused with 422 and a reason naming
the kind and line (never the value), and logged. The transport is bounded: at most
`max_connections` (64) at once in total (more get 503 without a thread), one deadline for each
request's head and body, JSON deeper than 64 levels → 400. The socket is mode 0600: a bwrap
bottle's processes are the service's own uid seen through a user namespace, so they reach it,
and no other local user does; the per-run bearer token is the access control between runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import sys
import threading
import time
import uuid
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Mapping

from bot_bottle.contrib.forge.base import ForgeError, ForgeNotFound, ForgeScopeError, ScopedForge
from bot_bottle.gate import secrets
from bot_bottle.gate.credentials import CREDENTIALS
from bot_bottle.orchestrator.git_gate_repo import RUN_TOKEN_LABEL
from bot_bottle.orchestrator.http_server import loads_json

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
DONE_STATUSES = ("done", "blocked", "failed")
PR_OPENED = "pr_opened"  # op-log kind recording each PR a run opened (its write scope)
_ROUTES = [
    ("GET", re.compile(r"^/issues/(\d+)$"), "read_issue"),
    ("GET", re.compile(r"^/pulls/(\d+)$"), "read_pr"),
    ("GET", re.compile(r"^/issues/(\d+)/comments$"), "read_comments"),
    ("POST", re.compile(r"^/issues/(\d+)/comments$"), "post_comment"),
    ("PATCH", re.compile(r"^/issues/(\d+)$"), "update_description"),
    ("POST", re.compile(r"^/pulls$"), "open_pr"),
    ("POST", re.compile(r"^/done$"), "done"),
]


def write_done_file(queue_dir: Path, run_id: int, status: str, summary: str, now_ns: int) -> Path:
    """tmp + fsync + os.replace; the name sorts by time and is unique."""
    queue_dir.mkdir(parents=True, exist_ok=True)
    name = f"{now_ns:020d}-{run_id}-{uuid.uuid4().hex}.json"
    tmp = queue_dir / f".{name}.tmp"
    data = json.dumps({"run_id": run_id, "status": status, "summary": summary}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, queue_dir / name)
    dfd = os.open(queue_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return queue_dir / name


def _err(status: int, reason: str) -> tuple[int, dict]:
    return status, {"status": "error", "reason": reason}


def service_secrets(forge_token: str, webhook_secret: str,
                    cli_env: Mapping[str, str]) -> dict[str, str]:
    """The service's secrets by name, for the write scan: its forge token and webhook secret,
    and each provider key the egress gates inject (read from the CLI's environment)."""
    found = {"FORGE_TOKEN": forge_token, "FORGE_WEBHOOK_SECRET": webhook_secret}
    for credential in CREDENTIALS.values():
        if cli_env.get(credential.key_env):
            found[credential.key_env] = cli_env[credential.key_env]
    return found


class SecretRefused(Exception):
    """A write held a secret; the message names the field, kind and line, never the value."""


def check_texts(what: str, texts: dict[str, str], known: Mapping[str, str]) -> None:
    """SecretRefused naming the first finding of the fields `texts` of `what` ("the comment")."""
    for field_name, text in texts.items():
        found = secrets.scan(text, known)
        if found:
            kinds = ", ".join(sorted({f.kind for f in found}))
            raise SecretRefused(f"refused: {what}'s {field_name} holds a secret ({kinds}; line "
                                f"{found[0].line}); nothing was written, remove it and retry")


class SidecarApp:
    def __init__(self, store, forge_factory: Callable[[str, str], Any], queue_dir: Path,
                 clock: Callable[[], float], time_ns: Callable[[], int],
                 secret_values: Mapping[str, str] | None = None) -> None:
        self._store = store
        self._forge_factory = forge_factory
        self._queue_dir = Path(queue_dir)
        self._clock = clock
        self._time_ns = time_ns
        # label -> value of the service's secrets (FORGE_TOKEN, injected provider keys)
        self._secret_values = dict(secret_values or {})

    def handle(self, method: str, path: str, token: str | None, body: bytes, *,
               on_run: Callable[[int], None] = lambda run_id: None) -> tuple[int, Any]:
        """`on_run(run_id)` names the run the token belongs to (for the access line)."""
        run = self._store.get_run_by_token(token) if token else None
        if run is None:
            return _err(401, "missing or unknown run token")
        on_run(run.id)
        for verb, pattern, op in _ROUTES:
            match = pattern.match(path)
            if match and verb == method:
                break
        else:
            status, payload = _err(404, f"no route {method} {path}")
            self._log(run, "unknown", path, status)
            return status, payload
        try:
            data = loads_json(body) if body else {}
            status, payload = self._dispatch(run, op, match.groups(), data)
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = _err(400, f"bad request: {exc}")
        except ForgeScopeError as exc:
            status, payload = _err(403, str(exc))
        except ForgeNotFound as exc:
            status, payload = _err(404, str(exc))
        except ForgeError as exc:
            status, payload = _err(502, f"forge failed: {exc}")
        except SecretRefused as exc:
            status, payload = _err(422, str(exc))
            log.warning("sidecar %s %s: %s repo=%s issue=%s run=%s", method, path, exc,
                        run.repo_full_name, run.issue_number, run.id)
        self._log(run, op, path, status)
        return status, payload

    def _log(self, run, op: str, path: str, status: int) -> None:
        now = self._clock()
        self._store.append_op(run.id, f"sidecar.{op}", {"path": path, "status": status}, now)
        self._store.update_run(run.id, now=now, last_progress_at=now)

    def _opened_prs(self, run) -> tuple[int, ...]:
        """Every PR this run opened (the run's PR is the latest): all stay in its scope."""
        opened = {int(op.detail["number"]) for op in self._store.op_log(run.id)
                  if op.kind == PR_OPENED}
        if run.pr_number is not None:
            opened.add(run.pr_number)
        return tuple(sorted(opened))

    def _scan(self, run, op: str, data: dict) -> None:
        if op not in _WRITES:
            return
        what, fields = _WRITES[op]
        texts = {name: _text(data, name) for name in fields}
        check_texts(what, texts, {RUN_TOKEN_LABEL: run.run_token, **self._secret_values})

    def _dispatch(self, run, op: str, args: tuple, data: dict) -> tuple[int, Any]:
        if op == "done":
            status, summary = data["status"], data.get("summary", "")
            if status not in DONE_STATUSES or not isinstance(summary, str):
                raise ValueError(f"status must be one of {DONE_STATUSES} and summary a string")
            write_done_file(self._queue_dir, run.id, status, summary, self._time_ns())
            return 202, {"status": "accepted"}
        self._scan(run, op, data)
        prs = self._opened_prs(run)
        forge = ScopedForge(self._forge_factory(run.owner, run.repo), run.owner, run.repo,
                            run.issue_number, pr_numbers=prs)
        n = int(args[0]) if args else None
        if op == "read_issue":
            return 200, asdict(forge.read_issue(n))
        if op == "read_pr":
            return 200, asdict(forge.read_pr(n))
        if op == "read_comments":
            return 200, [asdict(c) for c in forge.read_comments(n)]
        if op == "post_comment":
            return 201, asdict(forge.post_comment(n, _text(data, "body")))
        if op == "update_description":
            forge.update_description(n, _text(data, "body"))
            return 200, {"status": "ok"}
        pr = forge.open_pr(title=_text(data, "title"), body=_text(data, "body"),
                           head=_text(data, "head"), base=_text(data, "base"))
        now = self._clock()
        self._store.append_op(run.id, PR_OPENED, {"number": pr.number}, now)
        self._store.update_run(run.id, now=now, pr_number=pr.number)
        return 201, asdict(pr)


# what each writing route sends to the forge: (how a refusal names it, its text fields)
_WRITES = {"post_comment": ("the comment", ("body",)),
           "update_description": ("the description", ("body",)),
           "open_pr": ("the pull request", ("title", "body", "head", "base"))}


def _text(data: dict, key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # StreamRequestHandler applies it per read
        super().setup()

    def handle_one_request(self) -> None:
        # one deadline for the head and body of each request: a byte every few seconds
        # resets only the per-read timeout, not this one
        self.server.arm(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.disarm(self.connection)

    def address_string(self) -> str:  # AF_UNIX peers have no (host, port)
        return "unix"

    run_id: int | None = None  # the run whose token made the request being answered

    def log_message(self, format: str, *args) -> None:
        log.info("sidecar run=%s %s", "-" if self.run_id is None else self.run_id, format % args)

    def _on_run(self, run_id: int) -> None:
        self.run_id = run_id

    def _serve(self) -> None:
        self.run_id = None  # per request: a kept-alive connection carries several
        if self.path.startswith("/git/") and self.server.git_gate is not None:
            self.server.disarm(self.connection)  # a push may take long; the gate bounds it
            return self.server.git_gate.serve(self)  # git smart HTTP: git_gate.GitGate
        raw_length = (self.headers.get("Content-Length") or "0").strip()
        length = int(raw_length) if raw_length.isdigit() else -1
        if length < 0:
            status, payload = _err(400, "Content-Length must be a non-negative integer")
            self.close_connection = True
        elif length > MAX_BODY:
            status, payload = _err(413, "body over 1 MiB")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # cut at the deadline, or the client went away
                self.close_connection = True
                return
            self.server.disarm(self.connection)  # the request is in: the forge has its own
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            status, payload = self.server.app.handle(self.command, self.path, token, body,
                                                     on_run=self._on_run)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Connection: close\r\nContent-Length: 54\r\n\r\n"
         b'{"status": "error", "reason": "too many connections"}\n')


class SidecarServer(socketserver.ThreadingUnixStreamServer):
    """At most `max_connections` connections are served at once (more get 503 at once and
    are closed, without a thread); each request must arrive whole within `request_deadline`
    seconds, checked on every `serve_forever` poll."""

    daemon_threads = True
    request_queue_size = 128
    git_gate = None  # serves /git/ (git_gate.GitGate); set by bootstrap
    read_timeout = 30.0

    def __init__(self, path: Path, app: SidecarApp, *, max_connections: int = 64,
                 request_deadline: float = 30.0) -> None:
        self.app = app
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self._lock = threading.Lock()
        self._active = 0
        self._deadlines: dict[socket.socket, float] = {}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)

    def active_connections(self) -> int:
        with self._lock:
            return self._active

    def process_request(self, request, client_address) -> None:
        with self._lock:
            busy = self._active >= self.max_connections
            if not busy:
                self._active += 1
        if busy:  # answered from the accept loop: a short write that never blocks
            log.warning("sidecar refused a connection: %d already open", self.max_connections)
            try:
                request.send(_BUSY, socket.MSG_DONTWAIT)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._lock:
                self._active -= 1
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._active -= 1
                self._deadlines.pop(request, None)

    def handle_error(self, request, client_address) -> None:  # not the stdlib's stderr dump
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client's doing, or a cut
            log.debug("sidecar connection ended: %r", exc)
        else:
            log.warning("sidecar connection failed", exc_info=True)

    def arm(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + self.request_deadline

    def disarm(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def service_actions(self) -> None:
        super().service_actions()
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
            for conn in late:
                del self._deadlines[conn]
        for conn in late:
            log.info("sidecar dropping a connection: no complete request within %.1fs",
                     self.request_deadline)
            try:
                conn.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns EOF
            except OSError:
                pass
