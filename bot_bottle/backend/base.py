"""The backend protocol and the plan a backend runs: argv, env, mounts, network, paths, and
what every backend puts in a bottle (its mounts, the egress forwarder in front of the agent)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import BackendError
from ..gate import PROXY_PORT
from .lookup import Found
from .sandbox import SandboxExit
from .snapshot import restore_snapshot, snapshot  # noqa: F401 (backends' shared snapshot)

IN_WORKSPACE = "/workspace"
IN_HOME = "/home/agent"
IN_PKG = "/opt/bot-bottle/bot_bottle"
IN_RUN = "/run/bot-bottle"
IN_FORGE_SOCKET = IN_RUN + "/forge.sock"
IN_EGRESS_SOCKET = IN_RUN + "/egress.sock"
FORWARDER = IN_PKG + "/gate/forwarder.py"
EGRESS_SOCKET = "egress.sock"   # in the state dir, outside bottle/


@dataclass(frozen=True)
class RunPlan:
    slug: str
    state_dir: Path
    agent_argv: tuple[str, ...]
    env: dict = field(default_factory=dict)          # variables set inside the bottle
    network: str = "none"
    forge_socket: str | None = None                  # host path, bound at IN_FORGE_SOCKET
    image: str | None = None
    stdin: Path | None = None                        # host file given to the agent as stdin
    skills: dict = field(default_factory=dict)       # skill name -> host folder
    agent: object = None                             # the Agent manifest (providers' hooks)
    tools: tuple[str, ...] = ()                      # host paths bound read-only at the same path
    timeout: int | None = None                       # wall-time seconds; None = no limit
    egress: object = None                            # gate.plan.EgressPlan when network = "egress"
    resources: dict = field(default_factory=dict)    # kubernetes: the bottles' cpu/memory


class Backend(Protocol):
    name: str

    def check(self) -> None: ...
    def locate(self, plan: RunPlan, program: str) -> Found | None:
        """Where `program` resolves inside the bottle (None: not checked by this backend)."""
    def create(self, plan: RunPlan, sources: list, workspace: Path | None = None) -> None: ...
    def command(self, plan: RunPlan) -> list[str]: ...
    def mounts(self, plan: RunPlan) -> list[dict]: ...
    def run(self, plan: RunPlan, on_pid, output) -> SandboxExit:
        """Run the sandbox; its merged stdout/stderr go to `output(bytes)` as they come."""
    def freeze(self, plan_dir: Path, pid) -> None: ...
    def restore(self, plan_dir: Path) -> None: ...
    def destroy(self, plan_dir: Path, slug: str, pid=None) -> None: ...


PKG_DIR = Path(__file__).resolve().parent.parent  # the installed bot_bottle package


def find_program(name: str, path: str, missing: str) -> str:
    """The absolute path of `name` on `path`, or a BackendError saying `missing`."""
    exe = shutil.which(name, path=path)
    if not exe:
        raise BackendError(missing)
    return exe


def tool_mounts(plan) -> list[dict]:
    """The agent's `tools`: host paths bound read-only at the same path."""
    return [{"src": t, "dst": t, "mode": "ro"} for t in plan.tools]


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
    if plan.network == "egress":
        mounts.append({"src": str(plan.state_dir / EGRESS_SOCKET), "dst": IN_EGRESS_SOCKET,
                       "mode": "rw"})
    return mounts


def sandbox_argv(plan) -> list[str]:
    """What the sandbox runs: the agent's argv, behind the egress forwarder for `egress`
    (it listens on the bottle's loopback, relays to the gate's socket, then runs the agent
    as its child; `-I`: no PYTHON* variables or user site from the agent's environment)."""
    if plan.network != "egress":
        return list(plan.agent_argv)
    return ["python3", "-I", FORWARDER, "--port", str(PROXY_PORT), "--socket", IN_EGRESS_SOCKET,
            "--", *plan.agent_argv]
