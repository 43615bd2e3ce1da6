"""The `command` provider: the manifest's `command` argv unchanged, on start and on resume.

The prompt is not put on the command line: the program reads the file named by
`$BOT_BOTTLE_PROMPT_FILE` (`/run/bot-bottle/prompt.txt`) or `$BOT_BOTTLE_PROMPT` (set by `api`).
A resumed program tells runs apart by the state it left in the workspace and home.
"""

from __future__ import annotations

from ..manifest import Agent


def start(agent: Agent, prompt: str) -> list[str]:
    return list(agent.command)


def resume(agent: Agent, prompt: str) -> list[str]:
    return list(agent.command)
