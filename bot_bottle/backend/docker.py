"""The docker backend: the same operations through the `docker` CLI (version, image inspect,
run, stop, commit, rm, rmi).

Verified against a real dockerd (tests/integration/test_core_docker_*.py) and a fake `docker`
for the exact argv (tests/integration/test_core_docker_fake.py); docs/core.md lists what is
left open. Container name = image tag = `bot-bottle-<slug>`; network=none is docker's
`--network none` (loopback only), egress the same with the gate's socket bound in and the
forwarder (python3 in the image) in front of the agent, as under bwrap.
Every docker call gets the caller's client settings (DOCKER_* and the config dir, which holds
the current context), so they all reach one engine whatever HOME the bottle has. The agent runs
as `--user` the caller's uid:gid (as root: the agent user's), never as the image's USER, behind
docker's init (`--init`: the agent is not pid 1, so SIGTERM's default action applies), with no
capabilities, no_new_privs and `limits`' settings as docker's own options.
The container is kept after the agent exits (no `--rm`) until freeze or destroy: freeze stops it
(SIGTERM, SIGKILL after STOP_GRACE s), commits it, removes it, then snapshots the workspace.
The agent's `tools` are bound read-only at the same path; the provider's binary is not looked up
before the start (the image brings its own system, which the host cannot see).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import BackendError
from . import agent_user, limits
from .base import (IN_WORKSPACE, RunPlan, bottle_mounts, find_program, sandbox_argv, snapshot,
                   tool_mounts)
from .bwrap import BwrapBackend
from .sandbox import SandboxExit, run_sandbox, stop_process_group, wait_gone
from .snapshot import snapshot_cap

# seconds `commit` gives a running agent between SIGTERM and SIGKILL (`docker stop -t`): the
# grace bwrap's freeze gives its sandbox (sandbox.stop_process_group's default)
STOP_GRACE = 5


def _network(plan: RunPlan) -> str:
    """host: the host's; none and egress: docker's `none` (loopback only: an `--internal`
    network still reaches the host through its gateway; for egress the gate's socket is bound
    in and the forwarder runs in front of the agent, so the image needs python3)."""
    return "host" if plan.network == "host" else "none"


CLIENT_VARS = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH",
               "DOCKER_TLS_VERIFY")

class DockerBackend:
    name = "docker"

    def __init__(self, environ: dict):
        self.path = environ.get("PATH", os.defpath)
        # how the docker client finds its engine; the rest of the caller's env stays out.
        # The config dir is pinned to the caller's, since `docker run` gets the bottle's HOME.
        self._client = {k: environ[k] for k in CLIENT_VARS if k in environ}
        if "DOCKER_CONFIG" not in self._client and environ.get("HOME"):
            self._client["DOCKER_CONFIG"] = os.path.join(environ["HOME"], ".docker")
        self._files = BwrapBackend(environ)   # workspace/home preparation is shared

    def _docker(self) -> str:
        return find_program("docker", self.path,
                            'docker not found on PATH; install Docker or use backend = "bwrap"')

    def _call(self, *args, check=True, timeout=None):
        try:
            r = subprocess.run([self._docker(), *args], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, env={"PATH": self.path, **self._client},
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BackendError(f"docker {args[0]} did not answer in {timeout} s") from None
        if check and r.returncode != 0:
            err = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise BackendError(f"docker {args[0]} failed: {err[:200]}")
        return r

    def check(self) -> None:
        self._docker()
        self._limits()   # a bad limit setting fails before anything is created
        agent_user.check(self._files.environ)   # as root: the agent user must exist
        try:   # the engine, not just the client: else `docker run` exits 125 as if the agent had
            self._call("version", "--format", "{{.Server.Version}}", timeout=30)
        except BackendError as e:
            raise BackendError(f"the docker engine does not answer ({e}); start it or set DOCKER_HOST") from None

    def _image_id(self, image: str) -> str | None:
        r = self._call("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return r.stdout.strip() or None if r.returncode == 0 else None

    def locate(self, plan: RunPlan, program: str) -> None:
        return None   # the program is in the image, which only the engine can see

    def create(self, plan: RunPlan, sources: list, workspace: Path | None = None) -> None:
        self._files.create(plan, sources, workspace)

    def mounts(self, plan: RunPlan) -> list[dict]:
        # the image brings its own system, so no host dirs but the agent's tools
        return tool_mounts(plan) + bottle_mounts(plan)

    def _user(self) -> str:
        """uid:gid the agent runs as, whatever the image's USER: the caller's own, or as root
        the agent user's (see `agent_user`), so the workspace stays writable and never root's."""
        user = agent_user.check(self._files.environ)
        return f"{os.getuid()}:{os.getgid()}" if user is None else f"{user.uid}:{user.gid}"

    def _limits(self) -> list[str]:
        """The same limits bwrap's wrapper applies (see `limits`), as docker's own options:
        pids (processes and threads), core 0, the largest file = the snapshot cap, and
        memory and CPUs when set."""
        lim = limits.settings(self._files.environ, snapshot_cap(self._files.environ))
        argv = ["--pids-limit", str(lim.pids), "--ulimit", "core=0",
                "--ulimit", f"fsize={lim.fsize}"]
        if lim.memory is not None:
            argv += ["--memory", str(lim.memory), "--memory-swap", str(lim.memory)]
        if lim.cpus is not None:
            argv += ["--cpus", f"{lim.cpus:g}"]
        return argv

    def command(self, plan: RunPlan) -> list[str]:
        argv = ["docker", "run", "--init", "-i", "--name", f"bot-bottle-{plan.slug}",
                "-w", IN_WORKSPACE, "--network", _network(plan), "--user", self._user(), "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", *self._limits()]
        for m in self.mounts(plan):
            argv += ["-v", f"{m['src']}:{m['dst']}" + (":ro" if m["mode"] == "ro" else "")]
        for k in sorted(plan.env):  # `-e NAME` takes the value from docker's own environment,
            argv += ["-e", k]       # so secrets stay out of the world-readable argv
        return argv + [plan.image or "python:3-slim", *sandbox_argv(plan)]

    def run(self, plan: RunPlan, on_pid, output) -> SandboxExit:
        image = plan.image or "python:3-slim"
        if self._image_id(image) is None:   # else `docker run` pulls it or exits 125
            raise BackendError(f"image {image!r} is not on the docker engine; pull or build it first")
        argv = self.command(plan)
        argv[0] = self._docker()
        # a stopped container of this name outlived its bottle (a destroy that could not reach
        # the engine): it would refuse the name; a running one is not removed (no -f)
        self._call("rm", f"bot-bottle-{plan.slug}", check=False)
        self._files._give(plan, agent_user.check(self._files.environ))
        # the bottle's values for `-e NAME`; the client's settings win, as on every other call
        return run_sandbox(argv, {**plan.env, **self._client}, on_pid, plan.stdin, output,
                           plan.timeout)

    def freeze(self, state_dir: Path, pid) -> None:
        """Stop (SIGTERM, SIGKILL after STOP_GRACE s), commit the stopped container, remove
        it, then snapshot the workspace and home: what the agent's SIGTERM handler writes is
        in both. A container whose agent had exited is committed and removed the same way."""
        cap = snapshot_cap(self._files.environ)   # a bad setting fails before the bottle stops
        name = f"bot-bottle-{state_dir.name}"
        tag = f"{name}:frozen"
        stopped = self._call("stop", "-t", str(STOP_GRACE), name, check=False,
                             timeout=STOP_GRACE + 60).returncode == 0
        old = self._image_id(tag)
        committed = self._call("commit", name, tag, check=False).returncode == 0
        if committed and old and old != self._image_id(tag):
            self._call("rmi", old, check=False)   # the tag moved on: the old image is nobody's
        self._call("rm", "-f", name, check=False)
        if stopped:   # `docker run` ends on its own with the agent's exit code; a signal would
            wait_gone(pid, 10.0)   # make it exit 128+N in the agent's stead
        stop_process_group(pid)   # what is left of the client (an engine that did not answer)
        snapshot(state_dir / "bottle", state_dir / "snapshots" / "latest.tar", cap)

    def restore(self, state_dir: Path) -> None:
        self._files.restore(state_dir)

    def destroy(self, state_dir: Path, slug: str, pid=None) -> None:
        if shutil.which("docker", path=self.path):
            self._call("rm", "-f", f"bot-bottle-{slug}", check=False)
            self._call("rmi", "-f", f"bot-bottle-{slug}:frozen", check=False)
        self._files.destroy(state_dir, slug, pid)
