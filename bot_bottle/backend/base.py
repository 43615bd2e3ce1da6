"""The backend protocol and the plan a backend runs: argv, env, mounts, network, paths."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import BackendError

IN_WORKSPACE = "/workspace"
IN_HOME = "/home/agent"
IN_PKG = "/opt/bot-bottle/bot_bottle"
IN_RUN = "/run/bot-bottle"
IN_FORGE_SOCKET = IN_RUN + "/forge.sock"


@dataclass(frozen=True)
class RunPlan:
    slug: str
    state_dir: Path
    agent_argv: tuple[str, ...]
    env: dict = field(default_factory=dict)          # variables set inside the bottle
    network: str = "none"
    forge_socket: str | None = None                  # host path, bound at IN_FORGE_SOCKET
    image: str | None = None


class Backend(Protocol):
    name: str

    def check(self) -> None: ...
    def create(self, plan: RunPlan, sources: list) -> None: ...
    def command(self, plan: RunPlan) -> list[str]: ...
    def mounts(self, plan: RunPlan) -> list[dict]: ...
    def run(self, plan: RunPlan, on_pid) -> int: ...
    def freeze(self, plan_dir: Path, pid) -> None: ...
    def restore(self, plan_dir: Path) -> None: ...
    def destroy(self, plan_dir: Path, slug: str) -> None: ...


PKG_DIR = Path(__file__).resolve().parent.parent  # the installed bot_bottle package


def run_sandbox(argv: list[str], env: dict[str, str], on_pid) -> int:
    """Start the sandbox in its own session (so freeze can stop its whole process group),
    report its pid, wait; a signal death becomes 128 + signal like a shell's."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    except OSError as exc:
        raise BackendError(f"cannot run {os.path.basename(argv[0])}: {exc}") from exc
    on_pid(proc.pid)
    rc = proc.wait()
    return 128 - rc if rc < 0 else rc


def find_program(name: str, path: str, missing: str) -> str:
    """The absolute path of `name` on `path`, or a BackendError saying `missing`."""
    exe = shutil.which(name, path=path)
    if not exe:
        raise BackendError(missing)
    return exe


def bottle_mounts(plan) -> list[dict]:
    """What every backend binds into a bottle: its workspace and home (writable), the
    package (for the scripted agent), the prompt file, and the forge socket if any."""
    bottle = plan.state_dir / "bottle"
    mounts = [{"src": str(bottle / "workspace"), "dst": IN_WORKSPACE, "mode": "rw"},
              {"src": str(bottle / "home"), "dst": IN_HOME, "mode": "rw"},
              {"src": str(PKG_DIR), "dst": IN_PKG, "mode": "ro"},
              {"src": str(plan.state_dir / "prompt.txt"), "dst": IN_RUN + "/prompt.txt",
               "mode": "ro"}]
    if plan.forge_socket:
        mounts.append({"src": plan.forge_socket, "dst": IN_FORGE_SOCKET, "mode": "rw"})
    return mounts


def stop_process_group(pid, grace: float = 5.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL after `grace` seconds."""
    if not isinstance(pid, int) or pid <= 0:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def snapshot(bottle_dir: Path, dest: Path) -> None:
    """Tar workspace/ and home/ of bottle_dir into dest atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for part in ("workspace", "home"):
            if (bottle_dir / part).exists():
                tar.add(bottle_dir / part, arcname=part)
    os.replace(tmp, dest)


def restore_snapshot(src: Path, bottle_dir: Path) -> None:
    import shutil
    for part in ("workspace", "home"):
        shutil.rmtree(bottle_dir / part, ignore_errors=True)
    bottle_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src) as tar:
        if hasattr(tarfile, "tar_filter"):   # 3.11.4+: refuse absolute paths, .. and devices
            tar.extractall(bottle_dir, filter="tar")
        else:                                # 3.11.0-3: our own snapshot, written by snapshot()
            tar.extractall(bottle_dir)
