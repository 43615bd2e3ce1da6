"""Providers: turn an agent manifest and a prompt into the argv run inside the bottle.

claude: `claude [--model M] -p PROMPT` (+ `--continue` on resume); codex: `codex exec [-m M] PROMPT`
(resume: `codex exec resume --last PROMPT`); pi: `pi [--model M] -p PROMPT`; command: the manifest's
argv unchanged, the prompt arrives in BOT_BOTTLE_PROMPT_FILE / BOT_BOTTLE_PROMPT. Skills are
passed to every provider in BOT_BOTTLE_SKILLS (comma-separated).
"""

from __future__ import annotations

from ..manifest import Agent


def agent_argv(agent: Agent, prompt: str, *, resume: bool) -> list[str]:
    m = agent.model
    if agent.provider == "claude":
        return ["claude", *(["--model", m] if m else []), *(["--continue"] if resume else []), "-p", prompt]
    if agent.provider == "codex":
        head = ["codex", "exec", "resume", "--last"] if resume else ["codex", "exec"]
        return [*head, *(["-m", m] if m else []), prompt]
    if agent.provider == "pi":
        return ["pi", *(["--model", m] if m else []), *(["--continue"] if resume else []), "-p", prompt]
    return list(agent.command)
