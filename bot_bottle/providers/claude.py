"""The `claude` provider (Claude Code, npm `@anthropic-ai/claude-code`, verified with 2.1.332).

    start:  claude -p --permission-mode bypassPermissions [--model M]
    resume: claude -p --permission-mode bypassPermissions [--model M] --continue

The prompt is the sandbox's standard input: `claude -p` reads it there, on start and with
`--continue`, byte for byte (so `- a`, `--help`, 128 KiB and non-ASCII prompts arrive as
sent; an `@path` in a prompt is still the prompt's text, claude attaches that file as well).
Why each piece:
- `--permission-mode bypassPermissions`: in `-p` mode every edit and every writing shell
  command otherwise waits for an approval nobody can give ("Output redirection ... needs
  approval"); the bottle is the sandbox.
- `IS_SANDBOX=1`: as root claude refuses that mode ("cannot be used with root/sudo
  privileges") unless told it runs in a sandbox.
- `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` (= DISABLE_AUTOUPDATER, DISABLE_TELEMETRY,
  DISABLE_ERROR_REPORTING, DISABLE_BUG_COMMAND): no telemetry, update or connectivity
  traffic; the bottle reaches the model API only.
- `--continue` resumes the latest conversation of the working directory, which claude keeps
  in `~/.claude/projects/` inside the bottle's home (part of every snapshot).
The API: `ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY` are read by claude itself (set them in
the agent's or bottle's env). Skills: claude lists personal skills from
`~/.claude/skills/<name>/SKILL.md`, where `prepare_home` copies them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..manifest import Agent
from ._skills import install_skills

BINARY = "claude"
HOSTS = ("api.anthropic.com",)
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
ENV = {
    "IS_SANDBOX": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


def _argv(agent: Agent) -> list[str]:
    model = ["--model", agent.model] if agent.model else []
    return ["claude", "-p", "--permission-mode", "bypassPermissions", *model]


def start(agent: Agent) -> list[str]:
    return _argv(agent)


def resume(agent: Agent) -> list[str]:
    return [*_argv(agent), "--continue"]


def env(agent: Agent) -> dict[str, str]:
    return dict(ENV)


def prepare_home(agent: Agent, home: Path, bottle_env: Mapping[str, str],
                 skills: Mapping[str, Path]) -> None:
    install_skills(skills, home / ".claude" / "skills")
