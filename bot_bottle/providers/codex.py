"""The `codex` provider (OpenAI Codex CLI): `codex exec [-m M] PROMPT`; resume
`codex exec resume --last [-m M] PROMPT`."""

from __future__ import annotations

from ..manifest import Agent


def _model(agent: Agent) -> list[str]:
    return ["-m", agent.model] if agent.model else []


def start(agent: Agent, prompt: str) -> list[str]:
    return ["codex", "exec", *_model(agent), prompt]


def resume(agent: Agent, prompt: str) -> list[str]:
    return ["codex", "exec", "resume", "--last", *_model(agent), prompt]
