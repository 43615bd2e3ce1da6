"""Shared helpers for the hand-run benchmarks in `bench/` (not run in CI).

This module owns: the benchmark's throw-away home (an agent manifest and the fake core CLI's
settings), a `FakeGitea` seeded with the orchestrator's account, an agent org and a repo,
signed Gitea-style request headers, starting `python -m bot_bottle.orchestrator run` as a
subprocess (in its own process group, so the fake bottles it leaves behind are stopped with
it) and waiting for `/healthz`, reading a process's RSS from `/proc`, and `percentile`.
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


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} "
            f"· {platform.system()} {platform.release()} · load average {load}")


def make_home(fake_cli_sleep: float = 0.2) -> Path:
    """A temporary BOT_BOTTLE_HOME with agent `bench` and the fake CLI's sleep setting (in a
    file in the home, so each orchestrator's fake bottles follow their own home)."""
    home = Path(tempfile.mkdtemp(prefix="bot-bottle-bench-"))
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
                 log_level: str = "INFO", extra_env: dict[str, str] | None = None) -> None:
        self.home = Path(home)
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
            "BOT_BOTTLE_LOG_LEVEL": log_level,
            "PYTHONPATH": str(ROOT),
        }
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 20.0) -> "Orchestrator":
        self._log = open(self.log_path, "ab")
        # cwd = the checkout: the fake CLI children get no PYTHONPATH, `-m` finds it from cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot_bottle.orchestrator", "run"], cwd=str(ROOT),
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
        pgid = self.proc.pid  # start_new_session: the group id is the orchestrator's pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # fake bottles left in the group
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
        return json.loads(body)


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
