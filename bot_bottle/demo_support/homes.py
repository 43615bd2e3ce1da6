"""A ready `BOT_BOTTLE_HOME` for the scripted agent: a small git repository to work on, an
agent manifest `scripted` (the `command` provider running `scripted_agent.py`, or another
script of this folder, from the package bound into every bottle) and a bottle `b1` cloning
that repository with no network. With `network="egress"` and `repo=False` the bottle is
settings only and the agent reaches the orchestrator's git gate (its workspace, the issue's
repository, comes from the orchestrator). Used by the integration tests and by
`python -m bot_bottle.orchestrator demo`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Sequence

from bot_bottle.backend.base import IN_PKG

SCRIPTED_AGENT = f"{IN_PKG}/demo_support/scripted_agent.py"
PUSH_PROBE = f"{IN_PKG}/demo_support/push_probe.py"


def make_scripted_home(root: Path, agent_args: Sequence[str] = (), *, network: str = "none",
                       repo: bool = True, script: str = SCRIPTED_AGENT) -> Path:
    """Fill `root` (which must exist) and return it."""
    home = Path(root)
    (home / "agents").mkdir()
    (home / "bottles").mkdir()
    src = home / "src"
    src.mkdir()
    git = ["git", "-c", "user.name=bot-bottle", "-c", "user.email=demo@bot-bottle.invalid",
           "-C", str(src)]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    (src / "README").write_text("hello\n")
    subprocess.run(git + ["add", "README"], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    # json.dumps gives TOML-compatible basic strings for the argv and the path
    argv = ", ".join(json.dumps(a) for a in ["python3", script, *agent_args])
    (home / "agents" / "scripted.toml").write_text(
        f'provider = "command"\nbottles = ["b1"]\ncommand = [{argv}]\n')
    source = f"repo = {json.dumps(str(src))}\n" if repo else ""
    (home / "bottles" / "b1.toml").write_text(f'{source}network = {json.dumps(network)}\n')
    return home
