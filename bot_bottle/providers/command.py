"""The `command` provider: the manifest's `command` argv unchanged, on start and on resume.

The prompt is on standard input and in the file `$BOT_BOTTLE_PROMPT_FILE`
(`/run/bot-bottle/prompt.txt`). A resumed program tells runs apart by the state it left in
the workspace and home. Skills are copied to `~/skills/<name>` and named, comma-separated,
in `$BOT_BOTTLE_SKILLS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..manifest import Agent
from ._skills import install_skills

BINARY = None          # the manifest's command[0]
HOSTS: tuple[str, ...] = ()
BASE_URL_ENV = None


def start(agent: Agent) -> list[str]:
    return list(agent.command)


def resume(agent: Agent) -> list[str]:
    return list(agent.command)


def env(agent: Agent) -> dict[str, str]:
    return {"BOT_BOTTLE_SKILLS": ",".join(agent.skills)} if agent.skills else {}


def prepare_home(agent: Agent, home: Path, bottle_env: Mapping[str, str],
                 skills: Mapping[str, Path]) -> None:
    install_skills(skills, home / "skills")
