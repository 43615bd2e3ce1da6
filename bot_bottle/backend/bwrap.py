"""The bwrap backend: a bottle is state/<slug>/bottle/{workspace,home} run under bubblewrap.

Read-only host system dirs and the agent's `tools`, private /proc /dev /tmp, only workspace and
home writable, the real $HOME never bound, clean environment, all namespaces unshared (network
shared only for network = "host"; "egress" keeps the bottle's own loopback-only namespace and
binds the gate's socket, with the forwarder in front of the agent). The installed bot_bottle
package is bound read-only at /opt/bot-bottle. Each run starts behind `limits`' wrapper (a
cgroup of the bottle's own or rlimits; the agent log's first line of the run says which).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import fill, limits, lookup
from .base import (IN_RUN, IN_WORKSPACE, RunPlan, bottle_mounts, find_program, restore_snapshot,
                   sandbox_argv, snapshot, tool_mounts)
from .sandbox import SandboxExit, run_sandbox, stop_process_group
from .snapshot import snapshot_cap

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc")


class BwrapBackend:
    name = "bwrap"

    def __init__(self, environ: dict):
        self.path = environ.get("PATH", os.defpath)
        self.environ = environ

    def _bwrap(self) -> str:
        return find_program("bwrap", self.path, "bwrap (bubblewrap) not found on PATH; "
                            "install it: apt-get install bubblewrap")

    def check(self) -> None:
        self._bwrap()
        self._limits()   # a bad limit setting fails before anything is created

    def _limits(self) -> limits.Limits:
        return limits.settings(self.environ, snapshot_cap(self.environ))

    def locate(self, plan: RunPlan, program: str) -> lookup.Found:
        return lookup.locate(program, plan.env.get("PATH", ""), self.mounts(plan), IN_WORKSPACE)

    def create(self, plan: RunPlan, sources: list, workspace: Path | None = None) -> None:
        """sources: [(name, kind, location)]; see `fill` for where each goes."""
        fill.fill(plan.state_dir / "bottle", sources, workspace, self.path)

    def mounts(self, plan: RunPlan) -> list[dict]:
        system = [{"src": d, "dst": d, "mode": "ro"} for d in SYSTEM_DIRS if os.path.exists(d)]
        return system + tool_mounts(plan) + bottle_mounts(plan)

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
        return argv + ["--", *sandbox_argv(plan)]

    def run(self, plan: RunPlan, on_pid, output) -> SandboxExit:
        argv = self.command(plan)
        argv[0] = self._bwrap()
        applied = limits.prepare(plan.slug, self._limits())
        # our own line in the agent log (the CLI's stderr belongs to the orchestrator)
        output(f"--- bot-bottle: limits: {applied.summary} ---\n".encode())
        try:
            return run_sandbox(argv, dict(plan.env), on_pid, plan.stdin, output, plan.timeout,
                               wrap=lambda fd: limits.wrap_argv(applied, argv, fd))
        finally:
            limits.remove_cgroup(applied.cgroup)

    def freeze(self, state_dir: Path, pid) -> None:
        cap = snapshot_cap(self.environ)   # a bad setting fails before the bottle is stopped
        stop_process_group(pid)
        snapshot(state_dir / "bottle", state_dir / "snapshots" / "latest.tar", cap)

    def restore(self, state_dir: Path) -> None:
        restore_snapshot(state_dir / "snapshots" / "latest.tar", state_dir / "bottle")

    def destroy(self, state_dir: Path, slug: str, pid=None) -> None:
        stop_process_group(pid, grace=2.0)
