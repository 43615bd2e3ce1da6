"""The `pi` provider (pi coding agent): `pi [--model M] -p PROMPT`; resume adds `--continue`."""

from __future__ import annotations

from ..manifest import Agent


def _model(agent: Agent) -> list[str]:
    return ["--model", agent.model] if agent.model else []


def start(agent: Agent, prompt: str) -> list[str]:
    return ["pi", *_model(agent), "-p", prompt]


def resume(agent: Agent, prompt: str) -> list[str]:
    return ["pi", *_model(agent), "--continue", "-p", prompt]
