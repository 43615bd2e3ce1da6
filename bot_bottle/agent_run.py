"""One run of the agent in a bottle that exists: the prompt file, the provider's home setup,
the agent log, the egress gate (for `network = "egress"`, served by this process for exactly
as long as the sandbox runs), the sandbox with its time limit, and the run's fields in the
metadata (`run_started_at`, `ended_at`, `exit_code`, `timed_out`).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from . import state
from .agent_log import DEFAULT_CAP, AgentLog
from .backend.base import EGRESS_SOCKET
from .errors import BackendError, UsageError
from .gate.egress import Gate
from .providers import get_provider
from .resolve import secret_values

TIMEOUT_EXIT = 124   # like coreutils `timeout`
LOG_CAP_VAR = "BOT_BOTTLE_LOG_MAX_BYTES"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def lock(home: Path, slug: str):
    root = home / "state"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{state.check_slug(slug)}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def log_cap(environ) -> int:
    raw = environ.get(LOG_CAP_VAR)
    if raw is None:
        return DEFAULT_CAP
    if not raw.isdigit() or int(raw) < 1024:
        raise UsageError(f"{LOG_CAP_VAR} must be a whole number of bytes >= 1024, got {raw!r}")
    return int(raw)


def write_prompt(path: Path, prompt: str | bytes) -> None:
    """The prompt, byte for byte (a str from argv keeps its undecodable bytes), mode 0600."""
    data = prompt if isinstance(prompt, bytes) else prompt.encode("utf-8", "surrogateescape")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as fh:
        fh.write(data)


def _serve_gate(plan, on_refuse) -> Gate:
    path = plan.state_dir / EGRESS_SOCKET
    try:
        return Gate(plan.egress, on_refuse).listen(path)
    except OSError as exc:
        raise BackendError(f"egress gate: cannot listen on {path}: {exc.strerror or exc}") from exc


def run_agent(home: Path, slug: str, backend, plan, prompt, *, kind: str, run: int,
              cap: int = DEFAULT_CAP, notify=None) -> int:
    """Run the agent once (`kind` 'start' or 'resume', the bottle's `run`-th run); returns its
    exit code, TIMEOUT_EXIT when the time limit stopped it."""
    write_prompt(plan.state_dir / "prompt.txt", prompt)
    get_provider(plan.agent.provider).prepare_home(
        plan.agent, plan.state_dir / "bottle" / "home", plan.env, plan.skills)
    started = now()
    with lock(home, slug):
        state.update_metadata(home, slug, run_started_at=started, ended_at=None, exit_code=None,
                              timed_out=False)
    log = AgentLog(plan.state_dir, secret_values(plan), cap)
    log.note(f"run {run} ({kind}) at {started}")
    guard = threading.Lock()   # the gate's threads note refusals while the pump writes

    def write(data: bytes) -> None:
        with guard:
            log.write(data)

    def refused(host: str, port: int, reason: str) -> None:
        message = f"egress refused: {host}:{port}: {reason}"
        with guard:
            log.note(message)
        if notify:
            notify(message)

    def on_pid(pid):
        with lock(home, slug):
            state.update_metadata(home, slug, state="running", pid=pid)

    gate = None
    try:
        if plan.egress is not None:
            gate = _serve_gate(plan, refused)
        result = backend.run(plan, on_pid, write)
    except BackendError as exc:
        if gate is not None:
            gate.stop()
        log.note(f"error: {exc}")
        log.close()
        raise
    if gate is not None:
        gate.stop()
    code = result.code
    if result.timed_out:
        code = TIMEOUT_EXIT
        message = f"timeout: the agent ran past its {plan.timeout} s limit"
        log.note(message)
        if notify:
            notify(message)
    log.note(f"exit {code}")
    log.close()
    with lock(home, slug):
        meta = state.read_metadata(home, slug) or {}
        if meta.get("state") == "running":
            meta["state"] = "exited"
        meta.update(pid=None, exit_code=code, timed_out=result.timed_out, ended_at=now())
        if meta.get("slug"):
            state.write_metadata(home, slug, meta)
    return code
