"""The `codex` provider (OpenAI Codex CLI, verified with @openai/codex 0.171.0).

start:  `codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox [-m M] -`
resume: the same, then `resume --last -` (codex takes its exec options before the subcommand).

Why each piece:
- `-` reads the prompt from standard input (the sandbox's stdin is the prompt file), on start
  and after `resume --last` alike, verbatim: never parsed as an option, no size limit of argv.
- `--dangerously-bypass-approvals-and-sandbox`: `codex exec` is read-only by default; the
  bottle is the sandbox, so codex's own (a nested bwrap plus seccomp, which also cuts the
  network of every command) is switched off rather than stacked. `resume` takes no `-s`, but
  takes this flag.
- `--skip-git-repo-check`: codex refuses a workspace that is not a git repository without it.
- `$CODEX_HOME` is `~/.codex` in the bottle's home, so sessions (for `resume --last`) are in
  the snapshot. `prepare_home` writes its `config.toml` on every start and resume: codex 0.17x
  ignores `OPENAI_BASE_URL`, so the API is a `model_providers` entry whose `base_url` is the
  bottle's `OPENAI_BASE_URL` (else api.openai.com) and whose key comes from the variable
  `OPENAI_API_KEY` (named, never written); update checks, analytics, feedback, telemetry
  exporters and plugins (which fetch from api.github.com and chatgpt.com) are off.
- Skills: codex lists every `$CODEX_HOME/skills/<name>/SKILL.md` to the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..backend.base import IN_HOME
from ..manifest import Agent
from ._skills import install_skills

BINARY = "codex"
HOSTS = ("api.openai.com",)
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROVIDER_ID = "bot-bottle"
CODEX_DIR = ".codex"   # $CODEX_HOME, relative to the bottle's home
FLAGS = ("--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox")


def _exec(agent: Agent) -> list[str]:
    return ["codex", "exec", *FLAGS, *(["-m", agent.model] if agent.model else [])]


def start(agent: Agent) -> list[str]:
    return [*_exec(agent), "-"]


def resume(agent: Agent) -> list[str]:
    return [*_exec(agent), "resume", "--last", "-"]


def env(agent: Agent) -> dict[str, str]:
    return {"CODEX_HOME": f"{IN_HOME}/{CODEX_DIR}"}


def _toml_str(value: str) -> str:
    """`value` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def config_toml(bottle_env: Mapping[str, str]) -> str:
    """The `$CODEX_HOME/config.toml` for a bottle with environment `bottle_env`."""
    base_url = bottle_env.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"""\
# Written by bot-bottle on every start and resume: edits here are overwritten.
model_provider = {_toml_str(PROVIDER_ID)}
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
plugins = false
apps = false

[model_providers.{PROVIDER_ID}]
name = {_toml_str(PROVIDER_ID)}
base_url = {_toml_str(base_url)}
env_key = {_toml_str(API_KEY_ENV)}
wire_api = "responses"

[model_providers.{PROVIDER_ID}.env_http_headers]  # header = variable, sent when set
OpenAI-Organization = "OPENAI_ORGANIZATION"
OpenAI-Project = "OPENAI_PROJECT"
"""


def prepare_home(agent: Agent, home: Path, bottle_env: Mapping[str, str],
                 skills: Mapping[str, Path]) -> None:
    codex_home = home / CODEX_DIR
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(config_toml(bottle_env), encoding="utf-8")
    install_skills(skills, codex_home / "skills")
