"""The bwrap backend: a bottle is state/<slug>/bottle/{workspace,home} run under bubblewrap.

Read-only host system dirs, private /proc /dev /tmp, only workspace and home writable, the
real $HOME never bound, clean environment, all namespaces unshared (network shared only for
network = "host"). The installed bot_bottle package is bound read-only at /opt/bot-bottle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import BackendError
from .base import (IN_RUN, IN_WORKSPACE, RunPlan, bottle_mounts, find_program, restore_snapshot,
                   run_sandbox, snapshot, stop_process_group)

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc")


class BwrapBackend:
    name = "bwrap"

    def __init__(self, environ: dict):
        self.path = environ.get("PATH", os.defpath)

    def _bwrap(self) -> str:
        return find_program("bwrap", self.path, "bwrap (bubblewrap) not found on PATH; "
                            "install it: apt-get install bubblewrap")

    def check(self) -> None:
        self._bwrap()

    def create(self, plan: RunPlan, sources: list) -> None:
        """sources: [(name, kind, location)]; one source fills workspace/, several go to workspace/<name>."""
        bottle = plan.state_dir / "bottle"
        ws = bottle / "workspace"
        (bottle / "home").mkdir(parents=True, exist_ok=True)
        for name, kind, loc in sources:
            target = ws if len(sources) == 1 else ws / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if kind == "repo":
                git = find_program("git", self.path,
                                   "git not found on PATH; install it: apt-get install git")
                r = subprocess.run([git, "clone", "--quiet", "--", loc, str(target)],
                                   capture_output=True, text=True, stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                    raise BackendError(f"git clone {loc} failed: {last}")
            else:
                if not os.path.isdir(loc):
                    raise BackendError(f"bottle {name}: dir {loc} is not a directory")
                shutil.copytree(loc, target, symlinks=True)
        ws.mkdir(parents=True, exist_ok=True)

    def mounts(self, plan: RunPlan) -> list[dict]:
        system = [{"src": d, "dst": d, "mode": "ro"} for d in SYSTEM_DIRS if os.path.exists(d)]
        return system + bottle_mounts(plan)

    def command(self, plan: RunPlan) -> list[str]:
        argv = ["bwrap", "--unshare-all"]
        if plan.network == "host":
            argv.append("--share-net")
        argv += ["--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev",
                 "--tmpfs", "/tmp", "--dir", IN_RUN]
        for m in self.mounts(plan):
            argv += ["--ro-bind" if m["mode"] == "ro" else "--bind", m["src"], m["dst"]]
        # the environment is bwrap's own (set in `run`), never `--setenv` arguments: argv is
        # world-readable in /proc, and the run token and API keys must not be
        argv += ["--chdir", IN_WORKSPACE]
        return argv + ["--", *plan.agent_argv]

    def run(self, plan: RunPlan, on_pid) -> int:
        argv = self.command(plan)
        argv[0] = self._bwrap()
        return run_sandbox(argv, dict(plan.env), on_pid)

    def freeze(self, state_dir: Path, pid) -> None:
        stop_process_group(pid)
        snapshot(state_dir / "bottle", state_dir / "snapshots" / "latest.tar")

    def restore(self, state_dir: Path) -> None:
        restore_snapshot(state_dir / "snapshots" / "latest.tar", state_dir / "bottle")

    def destroy(self, state_dir: Path, slug: str, pid=None) -> None:
        stop_process_group(pid, grace=2.0)
