"""One run of the agent in a bottle that exists: the prompt file, the provider's home setup,
the agent log, the egress gate (for `network = "egress"`, served by this process for exactly
as long as the sandbox runs), the sandbox with its time limit, and the run's fields in the
metadata (`run_started_at`, `ended_at`, `exit_code`, `timed_out`).

A `commit` or `destroy` may land at any moment after the CLI printed the slug, before the
sandbox has a pid for it to stop. So the bottle's lock is held from the last look at its state
until the sandbox's pid is in the metadata: a bottle frozen (or freezing) by then never starts
its agent (the run ends with `STOPPED_EXIT`, as if `commit` had stopped it), a destroyed one
ends the run with an error and leaves nothing behind, and a `commit` after that finds the pid.
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
from .backend.sandbox import SandboxExit
from .errors import BackendError, StateConflictError, UsageError
from .gate.egress import Gate
from .private import private_open
from .providers import get_provider
from .resolve import secret_values

TIMEOUT_EXIT = 124   # like coreutils `timeout`
STOPPED_EXIT = 143   # 128 + SIGTERM: what a sandbox that `commit` stopped exits with
STOPPED_STATES = ("freezing", "frozen")
LOG_CAP_VAR = "BOT_BOTTLE_LOG_MAX_BYTES"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def lock(home: Path, slug: str):
    held = BottleLock(home, slug)
    try:
        yield
    finally:
        held.release()


class BottleLock:
    """The bottle's lock (an flock every CLI process takes around its metadata), held from
    creation until `release()`, which may come from a callback (the sandbox's pid)."""

    def __init__(self, home: Path, slug: str) -> None:
        root = state.private_home(home)
        fd = private_open(root / f".{state.check_slug(slug)}.lock", os.O_WRONLY | os.O_CREAT)
        self._fh = open(fd, "w")  # not inherited (O_CLOEXEC)
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        except BaseException:
            self._fh.close()
            raise

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()   # closing the only descriptor drops the flock


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
    with open(private_open(path), "wb") as fh:
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
    exit code, TIMEOUT_EXIT when the time limit stopped it, STOPPED_EXIT when a commit got
    in before the sandbox started; StateConflictError when the bottle was destroyed first."""
    log, started = _prepare(home, slug, plan, prompt, cap)
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

    held: list[BottleLock] = []

    def on_pid(pid):   # called with the bottle's lock held (below): nothing ran in between
        state.update_metadata(home, slug, state="running", pid=pid)
        held.pop().release()

    gates: list[Gate] = []

    def settle() -> None:
        while held:    # the sandbox did not start (or failed before reporting its pid)
            held.pop().release()
        while gates:   # before the log closes: the gate's threads write to it
            gates.pop().stop()

    try:
        if plan.egress is not None:
            gates.append(_serve_gate(plan, refused))
        held.append(BottleLock(home, slug))
        stopped = _stopped(home, slug)
        result = None if stopped else backend.run(plan, on_pid, write)
    except (BackendError, StateConflictError) as exc:
        settle()
        log.note(f"error: {exc}")
        log.close()
        raise
    finally:
        settle()
    if result is None:
        log.note(f"stopped before the agent started: the bottle is {stopped}")
        result = SandboxExit(STOPPED_EXIT)
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
        meta = state.read_metadata(home, slug)
        if meta is None:   # destroyed while the agent ran: remove what the run wrote since
            state.remove_state(home, slug)
            return code
        if meta.get("state") == "running":
            meta["state"] = "exited"
        meta.update(pid=None, exit_code=code, timed_out=result.timed_out, ended_at=now())
        state.write_metadata(home, slug, meta)
    return code


def _prepare(home: Path, slug: str, plan, prompt, cap: int) -> tuple[AgentLog, str]:
    """The prompt file, the provider's home, the run's start in the metadata, the open log.
    A destroy that got in first makes this a StateConflictError (not the OSError of a file
    whose directory vanished) and leaves nothing behind."""
    try:
        write_prompt(plan.state_dir / "prompt.txt", prompt)
        get_provider(plan.agent.provider).prepare_home(
            plan.agent, plan.state_dir / "bottle" / "home", plan.env, plan.skills)
        started = now()
        with lock(home, slug):
            _check_not_destroyed(home, slug)
            state.update_metadata(home, slug, run_started_at=started, ended_at=None,
                                  exit_code=None, timed_out=False)
        return AgentLog(plan.state_dir, secret_values(plan), cap), started
    except OSError:
        with lock(home, slug):
            _check_not_destroyed(home, slug)
        raise


def _check_not_destroyed(home: Path, slug: str) -> dict:
    """The bottle's metadata; StateConflictError when it was destroyed (the caller holds the
    lock). Whatever the run wrote into the state directory before is removed."""
    meta = state.read_metadata(home, slug)
    if meta is None:
        state.remove_state(home, slug)
        raise StateConflictError(f"bottle {slug!r} was destroyed before its agent started")
    return meta


def _stopped(home: Path, slug: str) -> str | None:
    """With the lock held, just before the sandbox starts: the state that forbids it to (a
    commit got in first) or None; StateConflictError when the bottle was destroyed."""
    st = _check_not_destroyed(home, slug).get("state")
    return st if st in STOPPED_STATES else None
