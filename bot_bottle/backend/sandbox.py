"""Running one sandbox process: its own session, the prompt file as stdin, stdout and stderr
merged into one pipe that is pumped chunk by chunk into `output`, and the wall-time limit.

Memory stays bounded whatever the agent prints: the pipe is read `CHUNK` bytes at a time and
each chunk is handed on at once (no line buffering). On the deadline the sandbox is stopped the
way `commit` stops it, and the pipe is drained to its end.

Stopping: SIGTERM goes to every process below the sandbox's own (found in /proc), not to its
process group: bwrap's `--new-session` puts the agent in a group of its own, and bwrap dying of
a SIGTERM would SIGKILL the sandbox at once (`--die-with-parent`) before the agent's handler
ran. bwrap exits by itself once the agent has; after the grace period the group gets SIGKILL
(and `--die-with-parent` takes the rest).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BackendError

CHUNK = 64 * 1024


@dataclass(frozen=True)
class SandboxExit:
    code: int               # the agent's exit code; 128 + N when killed by signal N
    timed_out: bool = False


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc (one that double-forks in the sandbox is
    reparented to bwrap's init, which is below `pid` too)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _signal(pid: int, sig: int) -> None:
    """SIGTERM: to what runs below `pid` (its own group when nothing does); SIGKILL: to the
    group. ProcessLookupError when the group is gone."""
    below = _descendants(pid) if sig == signal.SIGTERM else []
    for child in below:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass
    if not below:
        os.killpg(pid, sig)


def stop_process_group(pid, grace: float = 5.0) -> None:
    """SIGTERM the sandbox led by pid (see the module docstring), then SIGKILL its process
    group after `grace` seconds."""
    if not isinstance(pid, int) or pid <= 0:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            _signal(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, wait):
            return


def wait_gone(pid, seconds: float) -> bool:
    """Until the process `pid` has exited (its parent reaps it), at most `seconds`; whether
    it has."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """stop_process_group for our own child: waiting on it (not polling its pid, which stays
    alive as a zombie until reaped) returns as soon as it has died."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            _signal(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _pump(proc: subprocess.Popen, output: Callable[[bytes], None], timeout: float | None) -> bool:
    """Copy the pipe to `output` until EOF; True when the deadline stopped the sandbox."""
    fd = proc.stdout.fileno()
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            wait = None if deadline is None or timed_out else max(0.0, deadline - time.monotonic())
            if sel.select(wait):
                data = os.read(fd, CHUNK)
                if not data:
                    return timed_out
                output(data)
            elif not timed_out:   # select timed out: the deadline has passed
                timed_out = True
                _stop(proc)


def _started(proc: subprocess.Popen, status: int, name: str) -> None:
    """Read the wrapper's status pipe to EOF: empty when it exec'd the sandbox (close-on-exec
    closed it), else why it could not (a BackendError, once the wrapper has exited)."""
    chunks = []
    with os.fdopen(status, "rb") as fh:
        while chunk := fh.read(4096):
            chunks.append(chunk)
    if chunks:
        proc.stdout.close()
        proc.wait()
        raise BackendError(f"cannot run {name}: {b''.join(chunks).decode('utf-8', 'replace')}")


def renice_group(pid: int, nice: int) -> None:
    """Give the autogroup of `pid` (a child that started a session: where the kernel has
    autogroups, outside systemd's cgroups, it is one of its own, competing with ours as a whole
    whatever its processes' nice) the nice `nice` when that lowers it. Best effort: no
    autogroups, or no permission, changes nothing."""
    if nice > 0:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as fh:
                fh.write(str(nice))
        except OSError:
            pass


def run_sandbox(argv: list[str], env: dict[str, str], on_pid, stdin: Path | None = None,
                output: Callable[[bytes], None] | None = None,
                timeout: float | None = None, wrap=None) -> SandboxExit:
    """Start the sandbox in its own session (so freeze can stop its whole process group), with
    `stdin` (the prompt file) as its standard input and its merged stdout/stderr pumped into
    `output` (discarded when None); report its pid, wait. A signal death becomes 128 + signal
    like a shell's. `wrap(fd)`: the argv that starts `argv` behind a wrapper (the limits'),
    which reports on `fd` why it could not; nothing is reported as started until it has."""
    name = os.path.basename(argv[0])
    status = None
    if wrap is not None:
        status, status_w = os.pipe()
        argv = wrap(status_w)
    try:
        with open(stdin or os.devnull, "rb") as fh:
            proc = subprocess.Popen(argv, stdin=fh, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env,
                                    pass_fds=() if status is None else (status_w,))
    except OSError as exc:
        if status is not None:
            os.close(status)
        raise BackendError(f"cannot run {name}: {exc}") from exc
    finally:
        if status is not None:
            os.close(status_w)
    # a start the orchestrator ran `nice`d stays so in the sandbox's own session
    renice_group(proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
    if status is not None:
        _started(proc, status, name)
    try:
        on_pid(proc.pid)
        timed_out = _pump(proc, output or (lambda data: None), timeout)
    except BaseException:
        _stop(proc, grace=2.0)
        raise
    finally:
        proc.stdout.close()
        rc = proc.wait()
    return SandboxExit(128 - rc if rc < 0 else rc, timed_out)
