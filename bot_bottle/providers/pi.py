"""The `pi` provider (pi coding agent, npm `@mariozechner/pi-coding-agent`, verified with
0.73.1; it runs on Node.js >= 20.6, so the bottle's PATH must hold such a `node`).

    start:  pi -p --provider anthropic [--model M] [--skill ~/.bot-bottle/skills/S ...]
    resume: the same + --continue

The prompt is the sandbox's standard input: pi reads piped stdin as the prompt (print mode,
on start and with `--continue`). pi trims leading and trailing whitespace from it; the rest
arrives as sent. Positional arguments cannot carry it (pi parses any `-x` as an option and
rejects `--`) and an `@file` argument wraps the file in `<file name=...>` markup.
Why each piece:
- `--provider anthropic`: pi's default provider is Google; this provider speaks the
  Anthropic Messages API (key in `ANTHROPIC_API_KEY`, read by pi itself).
- Base URL: pi does not read `ANTHROPIC_BASE_URL`; when the bottle sets it, `prepare_home`
  writes it as the built-in provider's `baseUrl` in `~/.pi/agent/models.json` (pi's
  documented override; the built-in models stay).
- `PI_OFFLINE=1` (plus `PI_SKIP_VERSION_CHECK`, `PI_TELEMETRY=0`): no update checks,
  package checks, tool downloads or install pings at startup.
- Skills are copied to `~/.bot-bottle/skills/<name>` (a folder pi does not scan by itself)
  and named with `--skill`, so exactly the manifest's skills load.
- `--continue` resumes the latest session of the working directory, which pi keeps in
  `~/.pi/agent/sessions/` inside the bottle's home (part of every snapshot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from ..backend.base import IN_HOME
from ..manifest import Agent
from ._skills import install_skills

BINARY = "pi"
HOSTS = ("api.anthropic.com",)
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
ENV = {"PI_OFFLINE": "1", "PI_SKIP_VERSION_CHECK": "1", "PI_TELEMETRY": "0"}
SKILLS_DIR = ".bot-bottle/skills"      # under the bottle's home
MODELS_JSON = ".pi/agent/models.json"  # under the bottle's home


def _argv(agent: Agent) -> list[str]:
    argv = ["pi", "-p", "--provider", "anthropic"]
    if agent.model:
        argv += ["--model", agent.model]
    for name in agent.skills:
        argv += ["--skill", f"{IN_HOME}/{SKILLS_DIR}/{name}"]
    return argv


def start(agent: Agent) -> list[str]:
    return _argv(agent)


def resume(agent: Agent) -> list[str]:
    return [*_argv(agent), "--continue"]


def env(agent: Agent) -> dict[str, str]:
    return dict(ENV)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _write_base_url(path: Path, base_url: str | None) -> None:
    """Set (or, with no base URL, drop) `providers.anthropic.baseUrl`, keeping whatever else
    a models.json holds (the agent may have added providers)."""
    try:
        config = _dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        config = {}
    providers = config["providers"] = _dict(config.get("providers"))
    anthropic = providers["anthropic"] = _dict(providers.get("anthropic"))
    if base_url:
        anthropic["baseUrl"] = base_url
    else:
        anthropic.pop("baseUrl", None)
    if not anthropic:
        del providers["anthropic"]
    if not base_url and not path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def prepare_home(agent: Agent, home: Path, bottle_env: Mapping[str, str],
                 skills: Mapping[str, Path]) -> None:
    _write_base_url(home / MODELS_JSON, bottle_env.get(BASE_URL_ENV))
    install_skills(skills, home / SKILLS_DIR)
