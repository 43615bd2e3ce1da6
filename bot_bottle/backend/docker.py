"""The docker backend: the same operations through the `docker` CLI (run, commit, rm, network).

Verified only against a fake `docker` executable (tests/integration/test_core_docker_fake.py) and
the real client's `--help`, never a real engine (docs/core.md lists what that leaves open).
Container name = image tag = `bot-bottle-<slug>`; network=none uses an `--internal` network,
egress docker's `--network none` with the gate's socket bound in and the forwarder (python3 in
the image) in front of the agent, exactly as under bwrap.
The agent's `tools` are bound read-only at the same path; the provider's binary is not looked up
before the start (the image brings its own system, which the host cannot see).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import BackendError
from .base import IN_WORKSPACE, RunPlan, bottle_mounts, find_program, sandbox_argv, tool_mounts
from .bwrap import BwrapBackend
from .sandbox import SandboxExit, run_sandbox


def _network(plan: RunPlan) -> str:
    """host: the host's; egress: docker's `none` (loopback only; the gate's socket is bound
    in and the forwarder runs in front of the agent, so the image needs python3); none: an
    `--internal` network of the bottle's own."""
    return {"host": "host", "egress": "none"}.get(plan.network, f"bot-bottle-{plan.slug}")


CLIENT_VARS = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH",
               "DOCKER_TLS_VERIFY")

class DockerBackend:
    name = "docker"

    def __init__(self, environ: dict):
        self.path = environ.get("PATH", os.defpath)
        # how the docker client finds its engine; the rest of the caller's env stays out
        self._client = {k: environ[k] for k in CLIENT_VARS if k in environ}
        self._files = BwrapBackend(environ)   # workspace/home preparation is shared

    def _docker(self) -> str:
        return find_program("docker", self.path,
                            'docker not found on PATH; install Docker or use backend = "bwrap"')

    def _client_env(self) -> dict:
        return dict(self._client)

    def _call(self, *args, check=True):
        r = subprocess.run([self._docker(), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise BackendError(f"docker {args[0]} failed: {r.stderr.strip()[:200]}")
        return r

    def check(self) -> None:
        self._docker()

    def locate(self, plan: RunPlan, program: str) -> None:
        return None   # the program is in the image, which only the engine can see

    def create(self, plan: RunPlan, sources: list, workspace: Path | None = None) -> None:
        self._files.create(plan, sources, workspace)

    def mounts(self, plan: RunPlan) -> list[dict]:
        # the image brings its own system, so no host dirs but the agent's tools
        return tool_mounts(plan) + bottle_mounts(plan)

    def command(self, plan: RunPlan) -> list[str]:
        argv = ["docker", "run", "--rm", "-i", "--name", f"bot-bottle-{plan.slug}", "-w", IN_WORKSPACE,
                "--network", _network(plan)]
        for m in self.mounts(plan):
            argv += ["-v", f"{m['src']}:{m['dst']}" + (":ro" if m["mode"] == "ro" else "")]
        for k in sorted(plan.env):  # `-e NAME` takes the value from docker's own environment,
            argv += ["-e", k]       # so secrets stay out of the world-readable argv
        return argv + [plan.image or "python:3-slim", *sandbox_argv(plan)]

    def run(self, plan: RunPlan, on_pid, output) -> SandboxExit:
        if plan.network == "none":
            self._call("network", "create", "--internal", f"bot-bottle-{plan.slug}", check=False)
        argv = self.command(plan)
        argv[0] = self._docker()
        return run_sandbox(argv, {**plan.env, **self._client_env()}, on_pid, plan.stdin, output,
                           plan.timeout)

    def freeze(self, state_dir: Path, pid) -> None:
        slug = state_dir.name
        self._call("commit", f"bot-bottle-{slug}", f"bot-bottle-{slug}:frozen", check=False)
        self._call("rm", "-f", f"bot-bottle-{slug}", check=False)
        self._files.freeze(state_dir, pid)

    def restore(self, state_dir: Path) -> None:
        self._files.restore(state_dir)

    def destroy(self, state_dir: Path, slug: str, pid=None) -> None:
        if shutil.which("docker", path=self.path):
            self._call("rm", "-f", f"bot-bottle-{slug}", check=False)
            self._call("network", "rm", f"bot-bottle-{slug}", check=False)
            self._call("rmi", "-f", f"bot-bottle-{slug}:frozen", check=False)
        self._files.destroy(state_dir, slug, pid)
