"""Providers: turn an agent manifest and a prompt into the argv run inside the bottle.

One small module per provider (`claude`, `codex`, `pi`, `command`), each with the same
interface: `start(agent, prompt) -> list[str]` and `resume(agent, prompt) -> list[str]`.
`REGISTRY` maps the manifest's `provider` value to its module; `agent_argv` dispatches.
Every provider also gets the prompt in the bottle's environment (`BOT_BOTTLE_PROMPT`,
`BOT_BOTTLE_PROMPT_FILE`) and the skills in `BOT_BOTTLE_SKILLS`; those are set by `api`.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import ManifestError
from ..manifest import Agent
from . import claude, codex, command, pi

REGISTRY: dict[str, ModuleType] = {"claude": claude, "codex": codex, "pi": pi, "command": command}


def get_provider(name: str) -> ModuleType:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ManifestError(f"unknown provider {name!r} (known: {', '.join(REGISTRY)})") from None


def agent_argv(agent: Agent, prompt: str, *, resume: bool) -> list[str]:
    provider = get_provider(agent.provider)
    return provider.resume(agent, prompt) if resume else provider.start(agent, prompt)


__all__ = ["REGISTRY", "agent_argv", "get_provider"]
