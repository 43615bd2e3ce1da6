"""The git gate: git's smart HTTP on the forge sidecar's socket, under `/git/`, for the run
whose bearer token the request carries. Only the orchestrator holds `FORGE_TOKEN`, so this is
the only way an agent's commits reach Gitea.

The bottle's git talks to its `origin`, `http://127.0.0.1:3128/_git/<owner>/<repo>.git`; the
CLI's egress gate relays that to this socket as `/git/...` and adds `Authorization: Bearer
<run token>` itself (the remote carries no credential). Routes, for the run's own repository:

    GET  /git/<owner>/<repo>.git/info/refs?service=git-upload-pack|git-receive-pack
    POST /git/<owner>/<repo>.git/git-upload-pack
    POST /git/<owner>/<repo>.git/git-receive-pack

Each runs `git http-backend` on the run's gate repository (`git_gate_repo`), refreshed from
Gitea before every ref advertisement. A push passes the pre-receive hook (`git_hook`: the run's
branch only, the secret scan, then the push to Gitea, so the agent's git reports what Gitea
did). Its outcome is recorded in the run's op-log (`git.push`), and a push refused for a
secret is commented on the issue through the outbox. Errors are plain text: 401 (no or unknown
run token), 403 (another repository, dumb HTTP), 404 (unknown path), 405, 413 (a body over
`max_body`), 502 (Gitea unreachable). One exchange per connection; the response streams.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

from bot_bottle.orchestrator.git_gate_repo import GateRepos, GitGateError
from bot_bottle.orchestrator.model import RunRecord
from bot_bottle.orchestrator.targeting import marked

log = logging.getLogger(__name__)
ROUTE = re.compile(r"^/git/([^/]+)/([^/]+?)(?:\.git)?/(info/refs|git-upload-pack|git-receive-pack)$")
SERVICES = ("git-upload-pack", "git-receive-pack")
MAX_BODY = 512 << 20      # one push's pack
CHUNK = 64 << 10
PUSH_OP = "git.push"


class GitGate:
    def __init__(self, store, repos: GateRepos, *, clock: Callable[[], float], marker: str,
                 max_body: int = MAX_BODY) -> None:
        self._store = store
        self._repos = repos
        self._clock = clock
        self._marker = marker
        self._max = max_body

    def serve(self, handler) -> None:
        """Answer one request on the sidecar's handler (`http_handler.Handler`)."""
        handler.close_connection = True
        try:
            self._serve(handler)
        except OSError:   # the client went away (or stalled past the handler's timeout)
            pass

    def _serve(self, handler) -> None:
        path, _, query = handler.path.partition("?")
        auth = handler.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        run = self._store.get_run_by_token(token) if token else None
        if run is None:
            return _text(handler, 401, "missing or unknown run token")
        match = ROUTE.match(path)
        if match is None:
            return _text(handler, 404, f"no git route {path}")
        owner, repo, rest = match.groups()
        if (owner, repo) != (run.owner, run.repo):
            return _text(handler, 403, f"this run reaches only {run.owner}/{run.repo}")
        service = rest if rest != "info/refs" else parse_qs(query).get("service", [""])[0]
        if service not in SERVICES:
            return _text(handler, 403, "dumb HTTP is not served")
        if handler.command != ("GET" if rest == "info/refs" else "POST"):
            return _text(handler, 405, f"{handler.command} {rest} is not allowed")
        body = _read_body(handler, self._max, self._repos.root)
        if body is None:
            return _text(handler, 413, f"body over {self._max} bytes")
        report = None   # the hook's outcome, recorded even when the client has gone meanwhile
        with body, self._repos.lock(run):
            try:
                if rest == "info/refs":
                    self._repos.sync(run)   # the agent sees what Gitea holds now
                else:
                    self._repos.ensure(run)
            except GitGateError as exc:
                log.error("git gate: %s repo=%s issue=%s run=%s", exc, run.repo_full_name,
                          run.issue_number, run.id)
                return _text(handler, 502, str(exc))
            if service == "git-receive-pack" and rest != "info/refs":
                report = self._repos.root / f".report-{run.id}-{uuid.uuid4().hex}.json"
            try:
                self._backend(handler, run, rest, query, body, report)
            finally:
                outcome = _take_report(report)
                if outcome is not None:
                    self._record(run, outcome)

    def _backend(self, handler, run: RunRecord, rest: str, query: str, body, report) -> None:
        env = self._repos.backend_env(run, report or Path(os.devnull))
        size = body.seek(0, os.SEEK_END)
        body.seek(0)
        env.update({"GIT_PROJECT_ROOT": str(self._repos.root), "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": f"/{self._repos.path(run).name}/{rest}", "QUERY_STRING": query,
                    "REQUEST_METHOD": handler.command, "REMOTE_USER": f"bot-bottle-run-{run.id}",
                    "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(size),
                    "CONTENT_TYPE": handler.headers.get("Content-Type", "")})
        encoding = handler.headers.get("Content-Encoding", "")
        if encoding in ("gzip", "x-gzip"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        protocol = handler.headers.get("Git-Protocol", "")
        if re.fullmatch(r"[0-9A-Za-z=:]{1,64}", protocol):
            env["GIT_PROTOCOL"] = protocol
        with tempfile.TemporaryFile(dir=self._repos.root) as errors:
            proc = subprocess.Popen(["git", "http-backend"], stdin=body, stdout=subprocess.PIPE,
                                    stderr=errors, env=env, start_new_session=True)
            timer = threading.Timer(self._repos.timeout, _kill, (proc,))
            timer.start()
            try:
                _relay(proc.stdout, handler)
            except BaseException:
                _kill(proc)  # a client that went away must not leave git running
                raise
            finally:
                proc.stdout.close()
                code = proc.wait()  # bounded by the timer
                timer.cancel()
            if code not in (0, -signal.SIGKILL):
                errors.seek(0)
                tail = errors.read()[-300:].decode("utf-8", "replace").strip()
                log.warning("git gate: http-backend exited %s: %s run=%s", code, tail, run.id)

    def _record(self, run: RunRecord, outcome: dict) -> None:
        now = self._clock()
        findings = [f for f in outcome.get("findings", []) if isinstance(f, dict)]
        detail = {"result": outcome.get("result"), "branch": outcome.get("branch"),
                  "refs": [r.get("ref") for r in outcome.get("refs", []) if isinstance(r, dict)],
                  "reason": str(outcome.get("reason", ""))[:300], "findings": findings}
        self._store.append_op(run.id, PUSH_OP, detail, now, progress=True)
        log.info("git gate: push %s (%s) repo=%s issue=%s run=%s", detail["result"],
                 detail["reason"], run.repo_full_name, run.issue_number, run.id)
        if findings:
            self._store.enqueue_comment(run.id, run.owner, run.repo, run.issue_number,
                                        marked(secret_comment(detail), self._marker), now)


def secret_comment(detail: dict) -> str:
    """The issue's note on a push refused for a secret: where, and what kind (never the value)."""
    lines = []
    for f in detail["findings"]:
        where = "the commit message" if f.get("file") is None else f"`{_plain(f['file'])}`"
        lines.append(f"- {where} line {f.get('line')} (commit `{str(f.get('commit'))[:12]}`): "
                     f"{_plain(f.get('kind'))}")
    return (f"The git gate refused a push to `{_plain(detail['branch'])}`: it holds what looks "
            "like a secret, so nothing reached Gitea.\n\n" + "\n".join(lines)
            + "\n\nThe agent was told where; the value is not repeated here.")


def _plain(value) -> str:
    """Agent-chosen text (a file name) made safe inside a Markdown code span."""
    return re.sub(r"[`\r\n]", "?", str(value))[:200]


def _take_report(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None   # the hook did not run (a bad request) or died
    finally:
        path.unlink(missing_ok=True)


def _read_body(handler, limit: int, tmpdir: Path):
    """The request body (Content-Length or chunked) in an anonymous temporary file; None when
    it is over `limit` bytes."""
    tmpdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = tempfile.TemporaryFile(dir=tmpdir)
    try:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(handler.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                        pass   # trailers
                    break
                total += size
                if total > limit:
                    out.close()
                    return None
                _copy(handler.rfile, out, size)
                handler.rfile.readline(10)   # the CRLF after each chunk
        else:
            length = int(handler.headers.get("Content-Length") or 0)
            if length > limit:
                out.close()
                return None
            _copy(handler.rfile, out, length)
    except (ValueError, OSError):
        out.close()
        raise OSError("bad request body") from None
    out.seek(0)
    return out


def _copy(src, dst, n: int) -> None:
    while n > 0:
        data = src.read(min(n, CHUNK))
        if not data:
            raise OSError("body cut short")
        dst.write(data)
        n -= len(data)


def _relay(stdout, handler) -> None:
    """http-backend's CGI response as an HTTP response, streamed."""
    buf = b""
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        data = stdout.read1(CHUNK)
        if not data:
            return _text(handler, 502, "git http-backend gave no response")
        buf += data
    sep = b"\r\n\r\n" if b"\r\n\r\n" in buf else b"\n\n"
    head, _, rest = buf.partition(sep)
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name and name.lower() not in ("connection", "transfer-encoding"):
            headers.append((name, value.strip()))
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(rest)
    while data := stdout.read1(CHUNK):
        handler.wfile.write(data)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()


def _text(handler, status: int, text: str) -> None:
    raw = f"bot-bottle git gate: {text}\n".encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(raw)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(raw)
