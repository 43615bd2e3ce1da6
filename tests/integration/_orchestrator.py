"""Test harness: `python -m bot_bottle.orchestrator run` as a real child process.

`OrchestratorProcess` owns one orchestrator: a clean environment (only PATH, the forge
settings and a home), a free loopback port picked before start, stdout+stderr piped into a log
file in the home, a wait for `/healthz`, and stop (SIGTERM) / kill (SIGKILL) / cleanup that never
leaves a process behind (the child leads its own process group; cleanup kills the group).
`cli` is the `BOT_BOTTLE_CLI` value: the real core CLI by default (`REAL_CLI`), or
`FAKE_CLI` (`tests.support.fake_core_cli`, no bwrap needed). `make_fake_home`/`make_forge`
build a home with agent manifests and a started fake Gitea with the usual cast; `deliver`
signs like Gitea. Register `cleanup` (not `stop`) with addCleanup: it also kills bottles
(children in the process group) that outlived the orchestrator.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bot_bottle.demo_support import fake_gitea

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = f"{shlex.quote(sys.executable)} -m tests.support.fake_core_cli"
REAL_CLI = f"{shlex.quote(sys.executable)} -m bot_bottle"
TOKEN = "orchestrator-token"
SECRET = "test-webhook-secret"
ORG = "bots"
AGENT_USER = "claude-bot"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_fake_home(root: Path, *, agents=("scripted",), fake_cli_sleep: float | None = None) -> Path:
    """A BOT_BOTTLE_HOME under `root` with agent manifests for the fake CLI (no bwrap needed)."""
    home = Path(root) / "home"
    (home / "agents").mkdir(parents=True)
    (home / "bottles").mkdir()
    for agent in agents:
        (home / "agents" / f"{agent}.toml").write_text(
            'provider = "command"\nbottles = ["b1"]\ncommand = ["true"]\n')
    (home / "bottles" / "b1.toml").write_text(f'dir = "{home}"\nnetwork = "none"\n')
    if fake_cli_sleep is not None:
        (home / "fake-cli.json").write_text(json.dumps({"sleep": fake_cli_sleep}))
    return home


def make_forge(testcase, *, owner="acme", repo="widgets") -> fake_gitea.FakeGitea:
    """A started fake Gitea with the orchestrator's token, the agent in `ORG` and alice as writer."""
    g = fake_gitea.FakeGitea().start()
    testcase.addCleanup(g.stop)
    g.add_token(TOKEN, "orchestrator")
    g.add_repo(owner, repo)
    g.add_org_member(ORG, "orchestrator")  # the token must see the org's private members
    g.add_org_member(ORG, AGENT_USER)
    g.set_permission(owner, repo, "alice", "write")
    return g


class _PortTaken(Exception):
    pass


class OrchestratorProcess:
    def __init__(self, home: Path, gitea_url: str, *, secret: str = SECRET, org: str = ORG,
                 extra_env: dict[str, str] | None = None, cli: str | None = None,
                 token: str = TOKEN, port: int | None = None) -> None:
        self.home = Path(home)
        self.secret = secret
        self._auto_port = port is None
        self.port = port or free_port()
        self.db_path = str(self.home / "orchestrator.db")
        self.log_path = self.home / "orchestrator.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "PYTHONPATH": str(REPO_ROOT),
            "BOT_BOTTLE_HOME": str(self.home),
            "FORGE_GITEA_URL": gitea_url,
            "FORGE_TOKEN": token,
            "FORGE_AGENT_ORG": org,
            "FORGE_WEBHOOK_SECRET": secret,
            "FORGE_WEBHOOK_HOST": "127.0.0.1",
            "FORGE_WEBHOOK_PORT": str(self.port),
            "FORGE_DB_PATH": self.db_path,
            "FORGE_QUEUE_DIR": str(self.home / "queue"),
            "FORGE_SIDECAR_SOCKET": str(self.home / "sidecar.sock"),
            "BOT_BOTTLE_CLI": cli or REAL_CLI,
            **(extra_env or {}),
        }
        # an explicit FORGE_DB_PATH / FORGE_WEBHOOK_PORT in extra_env wins over our choice
        self.db_path = self.env["FORGE_DB_PATH"]
        if (extra_env or {}).get("FORGE_WEBHOOK_PORT"):
            self.port, self._auto_port = int(self.env["FORGE_WEBHOOK_PORT"]), False
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._pgids: list[int] = []
        self._drain: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ---- lifecycle
    def start(self, timeout: float = 15.0) -> "OrchestratorProcess":
        """Spawn `run` and wait for /healthz. If the port picked for us was taken in the
        meantime (another process won the race), pick another one and try again."""
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                if not self._auto_port or attempt == 2:
                    raise AssertionError(f"port {self.port} is taken:\n{self.log()}") from None
                self.port = free_port()
                self.env["FORGE_WEBHOOK_PORT"] = str(self.port)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> "OrchestratorProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.returncode = None
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
            log_start = log.tell()
        # output goes through a pipe, not a file: a test may cap the child's file size
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "bot_bottle.orchestrator", "run"],
            env=self.env, cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._pgids.append(self.proc.pid)
        self._drain = threading.Thread(target=self._copy_output, args=(self.proc.stdout,),
                                       name="orchestrator-log", daemon=True)
        self._drain.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                with open(self.log_path, "rb") as log:
                    log.seek(log_start)
                    if b"Address already in use" in log.read():
                        raise _PortTaken()
                raise AssertionError(f"orchestrator exited {self.returncode} at start:\n{self.log()}")
            if self.healthz() == 200:
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"orchestrator not healthy after {timeout}s:\n{self.log()}")

    def _copy_output(self, pipe) -> None:
        with pipe, open(self.log_path, "ab") as log:
            for line in pipe:
                log.write(line)
                log.flush()

    def _reap(self) -> None:
        self.proc.wait()
        self.returncode = self.proc.returncode
        if self._drain is not None:
            self._drain.join(5)
            self._drain = None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code is returned and kept in `.returncode`."""
        if self.proc is None:
            return self.returncode or 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"orchestrator ignored SIGTERM for {timeout}s:\n{self.log()}")
        self._reap()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the orchestrator only (its bottles, like real ones, may outlive it) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self._reap()

    def cleanup(self) -> None:
        """Kill the orchestrator, its descendants (even those in a session of their own) and
        whatever is left of every process group this object started (for addCleanup)."""
        strays = _descendants(self.proc.pid) if self.alive() else []
        self.kill()
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pgid in self._pgids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 8000) -> str:
        """The end of the child's output, without the access lines of polling GETs."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        lines = [ln for ln in text.splitlines()
                 if not ("http GET /healthz" in ln or "http GET /runs" in ln)]
        return "\n".join(lines)[-tail:]

    # ---- HTTP
    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def healthz(self) -> int | None:
        try:
            return self.request("GET", "/healthz", timeout=2.0)[0]
        except OSError:
            return None

    def runs(self, include_destroyed: bool = False) -> list[dict]:
        status, body = self.request("GET", "/runs?all=1" if include_destroyed else "/runs")
        if status != 200:
            raise AssertionError(f"GET /runs -> {status}: {body[:300]!r}")
        data = json.loads(body)
        return data["runs"] if isinstance(data, dict) else data

    def provenance(self, run_id: int) -> dict:
        status, body = self.request("GET", f"/runs/{int(run_id)}/provenance")
        if status != 200:
            raise AssertionError(f"GET /runs/{run_id}/provenance -> {status}: {body[:300]!r}")
        return json.loads(body)

    def deliver(self, event: str, event_type: str, body: dict | bytes, *,
                delivery_id: str | None = None, secret: str | None = None,
                timeout: float = 5.0) -> tuple[int, bytes]:
        raw = body if isinstance(body, bytes) else fake_gitea.gitea_json(body)
        return fake_gitea.deliver(self.url + "/webhook", event, event_type, raw,
                                  self.secret if secret is None else secret,
                                  timeout=timeout, delivery_id=delivery_id)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0,
                 interval: float = 0.05, what: str = "condition") -> Any:
        try:
            return wait_for(predicate, timeout, interval, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}\n{self.process_tree()}") from None

    def process_tree(self) -> str:
        """The child's descendants with their argv (what a timed-out wait was stuck behind)."""
        if not self.alive():
            return "--- the orchestrator is not running"
        lines = []
        for pid in _descendants(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            lines.append(f"{pid} " + " ".join(a.decode(errors="replace") for a in argv)[:300])
        return "--- processes under the orchestrator:\n" + "\n".join(lines)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, from /proc (empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # after "pid (comm) state"
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_orchestrator(testcase, home: Path, gitea_url: str, **kwargs) -> OrchestratorProcess:
    """Construct, register cleanup, start."""
    orch = OrchestratorProcess(home, gitea_url, **kwargs)
    testcase.addCleanup(orch.cleanup)
    return orch.start()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
