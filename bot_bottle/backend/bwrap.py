"""The bwrap backend: a bottle is state/<slug>/bottle/{workspace,home} run under bubblewrap.

Read-only host system dirs and the agent's `tools`, private /proc /dev /tmp, only workspace and
home writable, the real $HOME never bound, clean environment, all namespaces unshared (network
shared only for network = "host"; "egress" keeps the bottle's own loopback-only namespace and
binds the gate's socket, with the forwarder in front of the agent). The installed bot_bottle
package is bound read-only at /opt/bot-bottle. Each run starts behind `limits`' wrapper (a
cgroup of the bottle's own or rlimits; the agent log's first line of the run says which).

As root there is no user namespace (it would map root into the bottle): bwrap mounts as root,
then the bottle runs as `agent_user`'s unprivileged user, which owns its workspace, home, the
prompt file and the gate's socket; /tmp and /dev/shm are world-writable tmpfs (sticky).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BackendError
from . import agent_user, fill, limits, lookup
from .base import (EGRESS_SOCKET, IN_RUN, IN_WORKSPACE, RunPlan, bottle_mounts, find_program,
                   restore_snapshot, sandbox_argv, snapshot, tool_mounts)
from .sandbox import SandboxExit, run_sandbox, stop_process_group
from .snapshot import snapshot_cap

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc")
# --unshare-all without its --unshare-user-try: as root, the namespaces bwrap makes on its own
AS_ROOT = ("--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try")
OWN_MOUNTS = ("/proc", "/dev", "/tmp", IN_RUN)   # bwrap's own (a tool may sit under /tmp)


def _parents(dsts: list[str]) -> list[str]:
    """The directories bwrap would make on its own for these mount points (under the caller's
    umask, 0077: root's alone), parents first; not those at or under a mount point (the
    mount's own) or bwrap's own mount points. As root they must be made 0755, or the agent
    user cannot reach what is mounted below them."""
    def covered(path: str) -> bool:
        return path in OWN_MOUNTS or any(path == d or path.startswith(d + "/") for d in dsts)
    found = set()
    for dst in dsts:
        parts = dst.strip("/").split("/")[:-1]
        found.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted((p for p in found if not covered(p)), key=lambda p: (p.count("/"), p))


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
        self._user()     # as root: the agent user (and setpriv) must exist

    def _user(self) -> tuple[agent_user.AgentUser | None, list[str]]:
        """The agent user (None: not root) and the argv prefix that drops to it."""
        user = agent_user.check(self.environ)
        return user, [] if user is None else agent_user.drop_argv(user)

    def _limits(self) -> limits.Limits:
        return limits.settings(self.environ, snapshot_cap(self.environ))

    def locate(self, plan: RunPlan, program: str) -> lookup.Found:
        user = agent_user.check(self.environ)  # as root, what the agent user may execute
        return lookup.locate(program, plan.env.get("PATH", ""), self.mounts(plan), IN_WORKSPACE,
                             lambda path: agent_user.can_execute(path, user))

    def create(self, plan: RunPlan, sources: list, workspace: Path | None = None) -> None:
        """sources: [(name, kind, location)]; see `fill` for where each goes."""
        fill.fill(plan.state_dir / "bottle", sources, workspace, self.path)

    def mounts(self, plan: RunPlan) -> list[dict]:
        system = [{"src": d, "dst": d, "mode": "ro"} for d in SYSTEM_DIRS if os.path.exists(d)]
        return system + tool_mounts(plan) + bottle_mounts(plan)

    def command(self, plan: RunPlan) -> list[str]:
        user, drop = self._user()
        if user is None:
            argv = ["bwrap", "--unshare-all"] + (["--share-net"] if plan.network == "host" else [])
            tmp = ["--tmpfs", "/tmp"]
        else:
            argv = ["bwrap", *AS_ROOT] + ([] if plan.network == "host" else ["--unshare-net"])
            # without a user namespace these are root's: the agent user needs to write them
            tmp = ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
        argv += ["--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev",
                 *tmp, "--dir", IN_RUN]
        mounts = self.mounts(plan)
        if user is not None:
            for parent in _parents([IN_RUN, *(m["dst"] for m in mounts)]):
                argv += ["--perms", "0755", "--dir", parent]
        for m in mounts:
            argv += ["--ro-bind" if m["mode"] == "ro" else "--bind", m["src"], m["dst"]]
        # the environment is bwrap's own (set in `run`), never `--setenv` arguments: argv is
        # world-readable in /proc, and the run token and API keys must not be
        return argv + ["--chdir", IN_WORKSPACE, "--", *drop, *sandbox_argv(plan)]

    def run(self, plan: RunPlan, on_pid, output) -> SandboxExit:
        argv = self.command(plan)
        argv[0] = self._bwrap()
        self._give(plan, self._user()[0])
        applied = limits.prepare(plan.slug, self._limits())
        # our own line in the agent log (the CLI's stderr belongs to the orchestrator)
        output(f"--- bot-bottle: limits: {applied.summary} ---\n".encode())
        try:
            return run_sandbox(argv, dict(plan.env), on_pid, plan.stdin, output, plan.timeout,
                               wrap=lambda fd: limits.wrap_argv(applied, argv, fd))
        finally:
            limits.remove_cgroup(applied.cgroup)

    @staticmethod
    def _give(plan: RunPlan, user) -> None:
        """As root: what the bottle writes or reaches, to the agent user (see `agent_user`)."""
        if user is None:
            return
        bottle = plan.state_dir / "bottle"
        try:
            for part in ("workspace", "home"):
                agent_user.own(bottle / part, user)
            agent_user.give(plan.state_dir / "prompt.txt", user)   # BOT_BOTTLE_PROMPT_FILE
            if plan.network == "egress":
                agent_user.give(plan.state_dir / EGRESS_SOCKET, user)
        except OSError as exc:
            raise BackendError(f"cannot give the bottle to the agent user {user.name!r}: "
                               f"{exc.strerror or exc}") from exc

    def freeze(self, state_dir: Path, pid) -> None:
        cap = snapshot_cap(self.environ)   # a bad setting fails before the bottle is stopped
        stop_process_group(pid)
        snapshot(state_dir / "bottle", state_dir / "snapshots" / "latest.tar", cap)

    def restore(self, state_dir: Path) -> None:
        restore_snapshot(state_dir / "snapshots" / "latest.tar", state_dir / "bottle")

    def destroy(self, state_dir: Path, slug: str, pid=None) -> None:
        stop_process_group(pid, grace=2.0)
