"""Providers: what a bottle runs for an agent, and how that agent CLI is set up in the bottle.

One small module per provider (`claude`, `codex`, `pi`, `command`), each satisfying the
`Provider` protocol below. `REGISTRY` maps the manifest's `provider` value to its module.

The prompt never appears on the agent's command line (a prompt like `--help` or `- a` must
not parse as an option, and Linux refuses one argv string over 128 KiB): the sandbox's
standard input is the prompt file, which is also bound read-only at
`$BOT_BOTTLE_PROMPT_FILE` (`/run/bot-bottle/prompt.txt`). Both are set up by `api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

from ..errors import ManifestError
from ..manifest import Agent
from . import claude, codex, command, pi


class Provider(Protocol):
    """The role each provider module plays (modules satisfy it structurally)."""

    BINARY: str | None            # argv[0] that must resolve inside the bottle (None: the manifest's)
    HOSTS: tuple[str, ...]        # the API hosts the CLI needs (for the egress gate)
    BASE_URL_ENV: str | None      # the bottle variable that points the CLI at its API

    def start(self, agent: Agent) -> list[str]: ...
    def resume(self, agent: Agent) -> list[str]: ...

    def env(self, agent: Agent) -> dict[str, str]:
        """Fixed variables the CLI needs in the bottle (set before the manifests' own)."""

    def prepare_home(self, agent: Agent, home: Path, bottle_env: Mapping[str, str],
                     skills: Mapping[str, Path]) -> None:
        """Write the CLI's configuration into `home` (the host path of the bottle's home),
        on every start and resume; copy `skills` (name -> host folder) where the CLI reads
        them. `bottle_env` is the environment the agent will get."""


REGISTRY: dict[str, Provider] = {"claude": claude, "codex": codex, "pi": pi, "command": command}


def get_provider(name: str) -> Provider:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ManifestError(f"unknown provider {name!r} (known: {', '.join(REGISTRY)})") from None


def agent_argv(agent: Agent, *, resume: bool) -> list[str]:
    provider = get_provider(agent.provider)
    return provider.resume(agent) if resume else provider.start(agent)


__all__ = ["Provider", "REGISTRY", "agent_argv", "get_provider"]
