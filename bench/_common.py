"""Shared helpers for the hand-run benchmarks in `bench/` (not run in CI).

This module owns: the benchmark's throw-away home (an agent manifest and the fake core CLI's
settings), a `FakeGitea` seeded with the orchestrator's account, an agent org and a repo,
signed Gitea-style request headers, starting `python -m bot_bottle.orchestrator run` as a
subprocess (in its own process group, so the fake bottles it leaves behind are stopped with
it) and waiting for `/healthz`, reading a process's RSS and CPU time from `/proc`,
`percentile`, the dispatcher's backlog (`pending`, `drain`, from `/metrics`); and the
shared Go tools in `../shared/bench` (`loadgen`, `webhook-peer`):
`Service` (any server as a subprocess in its own process group), `loadgen` (one block of
load, its JSON figures) and `distinct_template` (bodies the orchestrator does not dedupe).
Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot_bottle.demo_support.fake_gitea import FakeGitea  # noqa: E402

SECRET = "bench-webhook-secret"
TOKEN = "bench-token"
ORG = "bots"
OWNER, REPO = "acme", "widgets"
AGENT = "bench"
AGENT_LOGIN = "claude-bot"
ORCH_LOGIN = "bot-bottle"
HUMAN = "alice"

SHARED_BENCH = ROOT.parent / "shared" / "bench"
LOADGEN = SHARED_BENCH / "loadgen"
PEER = SHARED_BENCH / "webhook-peer"
TEMPLATE = SHARED_BENCH / "issue_comment.template.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of nothing")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values) -> float:
    return percentile(values, 50)


def med(values) -> float:
    """The median of the values that are not None; NaN if there are none."""
    values = [v for v in values if v is not None]
    return median(values) if values else float("nan")


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} "
            f"· {platform.system()} {platform.release()} · load average {load}")


def make_home(fake_cli_sleep: float = 0.2, parent: Path | None = None) -> Path:
    """A temporary BOT_BOTTLE_HOME (under `parent`, default `$TMPDIR`) with agent `bench` and
    the fake CLI's sleep setting (in a file in the home, so each orchestrator's fake bottles
    follow their own home)."""
    home = Path(tempfile.mkdtemp(prefix="bot-bottle-bench-", dir=parent))
    (home / "agents").mkdir()
    (home / "agents" / f"{AGENT}.toml").write_text(
        'provider = "command"\nbottles = ["bench"]\ncommand = ["true"]\n', encoding="utf-8")
    (home / "fake-cli.json").write_text(json.dumps({"sleep": fake_cli_sleep}), encoding="utf-8")
    return home


def remove_home(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)


def start_fake_gitea() -> FakeGitea:
    g = FakeGitea().start()
    g.add_token(TOKEN, ORCH_LOGIN)
    g.add_repo(OWNER, REPO)
    for login in (AGENT_LOGIN, ORCH_LOGIN):
        g.add_org_member(ORG, login)
    g.set_permission(OWNER, REPO, HUMAN, "write")
    return g


def gitea_headers(event: str, event_type: str, body: bytes, secret: str = SECRET,
                  delivery_id: str | None = None) -> dict[str, str]:
    """The headers Gitea sends with a JSON delivery (as `fake_gitea.deliver` builds them)."""
    key = secret.encode()
    sig = hmac.new(key, body, hashlib.sha256).hexdigest()
    sha1 = hmac.new(key, body, hashlib.sha1).hexdigest()
    did = delivery_id or str(uuid.uuid4())
    headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1",
               "Accept-Encoding": "gzip", "X-Gitea-Hook-Installation-Target-Type": "repository",
               "X-GitHub-Hook-Installation-Target-Type": "repository",
               "X-Hub-Signature": f"sha1={sha1}", "X-Hub-Signature-256": f"sha256={sig}",
               "Content-Length": str(len(body))}
    for p in ("Gitea", "Gogs", "GitHub"):
        headers[f"X-{p}-Delivery"] = did
        headers[f"X-{p}-Event"] = event
        headers[f"X-{p}-Event-Type"] = event_type
    headers["X-Gitea-Signature"] = headers["X-Gogs-Signature"] = sig
    return headers


def post(port: int, body: bytes, headers: dict[str, str], path: str = "/webhook",
         timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Orchestrator:
    """`python -m bot_bottle.orchestrator run` in a subprocess, against a fake Gitea and the
    fake core CLI. Use as a context manager; `stop()` sends SIGTERM, then stops the whole
    process group (the fake bottles the orchestrator leaves running by design)."""

    def __init__(self, home: Path, gitea_url: str, *, max_runs: int = 4,
                 log_level: str | None = None, extra_env: dict[str, str] | None = None,
                 cpu: int | None = None) -> None:
        """`cpu`: pin the orchestrator (and what it starts) to that CPU (`taskset`), as
        systemd's `CPUAffinity=` would."""
        self.home = Path(home)
        self.cpu = cpu
        self.port = free_port()
        self.log_path = self.home / "orchestrator.log"
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "BOT_BOTTLE_HOME": str(self.home),
            "FORGE_GITEA_URL": gitea_url,
            "FORGE_TOKEN": TOKEN,
            "FORGE_AGENT_ORG": ORG,
            "FORGE_WEBHOOK_SECRET": SECRET,
            "FORGE_WEBHOOK_HOST": "127.0.0.1",
            "FORGE_WEBHOOK_PORT": str(self.port),
            "FORGE_MAX_CONCURRENT_RUNS": str(max_runs),
            "BOT_BOTTLE_CLI": f"{sys.executable} -m tests.support.fake_core_cli",
            "PYTHONPATH": str(ROOT),
        }
        if log_level:  # else the orchestrator's own default, what an operator runs
            env["BOT_BOTTLE_LOG_LEVEL"] = log_level
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 20.0) -> "Orchestrator":
        self._log = open(self.log_path, "ab")
        # cwd = the checkout: the fake CLI children get no PYTHONPATH, `-m` finds it from cwd
        pin = ["taskset", "-c", str(int(self.cpu))] if self.cpu is not None else []
        self.proc = subprocess.Popen(  # taskset execs python: the pid stays the orchestrator's
            pin + [sys.executable, "-m", "bot_bottle.orchestrator", "run"], cwd=str(ROOT),
            env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited {self.proc.returncode}; "
                                   f"log: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if get(self.port, "/healthz", timeout=1.0)[0] == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"orchestrator not healthy within {timeout}s; log: {self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_group(self.proc, grace=15.0)  # and the fake bottles left in its group
        if self._log:
            self._log.close()
        self.proc = None

    def __enter__(self) -> "Orchestrator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def runs(self, include_destroyed: bool = False) -> list[dict]:
        status, body = get(self.port, "/runs?all=1" if include_destroyed else "/runs")
        if status != 200:
            raise RuntimeError(f"/runs answered {status}")
        doc = json.loads(body)  # the runs document: {"version": 2, "at": ..., "runs": [...]}
        return doc["runs"] if isinstance(doc, dict) else doc


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a live process, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def mib(kib: int) -> float:
    return kib / 1024.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all its threads (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to a process started with `start_new_session`, then SIGKILL to its group
    (its id is the process's pid), whatever is left in it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class Service:
    """A server in a subprocess of its own process group, ready once `GET probe_path` answers
    (any status) on `port`; `stop()` ends the group. Output goes to `log_path`."""

    def __init__(self, argv: list[str], port: int, log_path: Path, *,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.argv, self.port, self.log_path = argv, port, Path(log_path)
        self.env, self.cwd = env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0, probe_path: str = "/") -> "Service":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                get(self.port, probe_path, timeout=1.0)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv[0]} not listening on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


def distinct_template(dest: Path, source: Path = TEMPLATE) -> Path:
    """`source` with `@@SEQ@@` also in the comment's `updated_at`, written to `dest`. The
    shared template varies only the comment's text, so every body after the first would carry
    the same comment id and edit time: the orchestrator dedupes those (`events.comment_key`)
    and answers 200 "duplicate" without storing anything. Every server gets these bodies."""
    text = source.read_text(encoding="utf-8")
    start = text.index('"comment": {')
    m = re.compile(r'"updated_at": "([^"]*)"').search(text, start)
    if m is None:
        raise ValueError(f"{source}: no comment updated_at")
    text = text[:m.start(1)] + m.group(1) + " @@SEQ@@" + text[m.end(1):]
    json.loads(text)  # still JSON
    dest.write_text(text, encoding="utf-8")
    return dest


def loadgen(port: int, path: str, conc: int, n: int, template: Path, tag: str,
            secret: str = SECRET, timeout: float = 600.0) -> dict:
    """One block of `n` signed requests over `conc` keep-alive connections: loadgen's JSON
    figures (rps, p50_ms, p99_ms, statuses, errors, ...)."""
    argv = [str(LOADGEN), "-addr", f"127.0.0.1:{port}", "-path", path, "-c", str(conc),
            "-n", str(n), "-template", str(template), "-tag", tag, "-secret", secret]
    # the secret on loadgen's argv is the benchmark's throw-away one, never a real secret
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen exited {out.returncode}: {out.stderr[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_get(port: int, path: str) -> float:
    """Milliseconds for one `GET path` answered 200, body read."""
    t0 = time.perf_counter()
    status, _ = get(port, path, timeout=60.0)
    took = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}")
    return took


def pending(orch: "Orchestrator") -> int:
    """Stored deliveries the dispatcher has not processed yet (`/metrics`)."""
    _, body = get(orch.port, "/metrics", timeout=60.0)
    for line in body.decode().splitlines():
        if line.startswith("bot_bottle_deliveries_pending "):
            return int(float(line.split()[-1]))
    raise RuntimeError("/metrics has no bot_bottle_deliveries_pending")


def drain(orch: "Orchestrator", timeout: float = 300.0) -> float:
    """Wait until the dispatcher has processed every stored delivery; seconds waited."""
    start = time.monotonic()
    while pending(orch):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"backlog not drained in {timeout}s; log: {orch.log_tail()}")
        time.sleep(0.1)
    return time.monotonic() - start
