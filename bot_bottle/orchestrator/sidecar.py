"""The forge sidecar (architecture §2): an HTTP/1.1 server on a Unix socket through which an
agent reaches the forge, scoped to its run, plus `POST /done` written atomically into the
queue directory for the relay.

`SidecarApp.handle(method, path, token, body) -> (status, payload)` holds all decisions and
is tested without sockets; `SidecarServer` puts it on the service's one HTTP transport
(`http_transport`). Every text the agent
writes to the forge (a comment, a description, a PR's title and body) is first scanned with
`gate.secrets` for the run's token, the service's secrets (`FORGE_TOKEN`, the provider keys the
egress gate injects) and common token shapes; a hit is refused with 422 and a reason naming
the kind and line (never the value), and logged. The transport is bounded: at most
`max_connections` (64) at once in total and `max_per_bottle` (16) from one bottle (`peers`:
the caller's process, walked up to the core CLI that runs its bottle), more get 503 without
a thread; one deadline for each request's head and body; JSON deeper than 64 levels → 400.
The socket is mode 0600, owned by the service's user or, run as root, by the agent user
bottles run as (`backend.agent_user.grant`): no other local user reaches it; the per-run
bearer token is the access control between runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socketserver
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

from bot_bottle.contrib.forge.base import ForgeError, ForgeNotFound, ForgeScopeError, ScopedForge
from bot_bottle.gate import secrets
from bot_bottle.gate.credentials import CREDENTIALS
from bot_bottle.orchestrator import peers
from bot_bottle.orchestrator.git_gate_repo import RUN_TOKEN_LABEL
from bot_bottle.orchestrator.http_server import loads_json
from bot_bottle.orchestrator.http_handler import Handler
from bot_bottle.orchestrator.http_transport import Response, Transport, printable

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
            log.warning("sidecar %s %s: %s repo=%s issue=%s run=%s", method,
                        printable(path), exc, run.repo_full_name, run.issue_number, run.id)
        self._log(run, op, path, status)
        return status, payload

    def _log(self, run, op: str, path: str, status: int) -> None:
        # over the run's op-log rate a call is counted, not stored, and is no progress
        self._store.append_op(run.id, f"sidecar.{op}", {"path": path, "status": status},
                              self._clock(), progress=True)

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
        self._store.append_op(run.id, PR_OPENED, {"number": pr.number}, now, essential=True)
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


class _SidecarHttp:
    """`SidecarApp` as an `http_transport.HttpApp`: the bearer token out of the headers, the
    payload as JSON, and the token's run named for the access line."""

    def __init__(self, app: SidecarApp) -> None:
        self.app = app

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        auth = headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        runs: list[int] = []
        status, payload = self.app.handle(method, path, token, body, on_run=runs.append)
        return Response(status, "application/json", json.dumps(payload).encode(),
                        who=f"run={runs[0] if runs else '-'}")


class SidecarServer(Transport, socketserver.ThreadingUnixStreamServer):
    """The sidecar's socket (mode 0600) on the service's one transport (`http_transport`): at
    most `max_connections` served at once and `max_per_bottle` from one bottle (more get 503
    without a thread), each request whole within `request_deadline` seconds. `/git/` goes to the git gate, which reads its own body
    (git sends packs chunked) and bounds itself."""

    git_gate = None  # serves /git/ (git_gate.GitGate); set by bootstrap
    name = "sidecar"
    logger = log

    def __init__(self, path: Path, app: SidecarApp, *, max_connections: int = 64,
                 max_per_bottle: int = 16, request_deadline: float = 30.0,
                 read_timeout: float = 30.0, drain_timeout: float = 5.0) -> None:
        self._transport_init(_SidecarHttp(app), read_timeout=read_timeout,
                             request_deadline=request_deadline,
                             max_connections=max_connections, drain_timeout=drain_timeout,
                             max_body=MAX_BODY, max_per_peer=max_per_bottle)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()
        super().__init__(str(path), Handler)
        os.chmod(path, 0o600)

    def peer_key(self, request) -> object:
        return peers.bottle_key(request)  # the bottle's CLI pid: one bottle cannot fill the cap

    def stream_route(self, path: str):
        if path.startswith("/git/") and self.git_gate is not None:
            return self.git_gate.serve
        return None

    def access(self, method: str, path: str, response: Response, seconds: float) -> None:
        # every call of an agent is worth a line: which run did what, and how it ended
        self.logger.info("sidecar %s %s %s %d %dB %.1fms", response.who or "run=-", method,
                         printable(path), response.status, len(response.body), seconds * 1000)
