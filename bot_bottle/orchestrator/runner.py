"""The bottle runner port (`BottleRunner`, architecture §5) and its real adapter,
`SubprocessBottleRunner`, which drives the core CLI (`python -m bot_bottle ...`).

The runner never hands the orchestrator's forge secrets to the CLI: the child environment
is the configured base environment minus `FORGE_TOKEN`/`FORGE_WEBHOOK_SECRET`, plus only
the per-run `env` (sidecar socket and run token). Names are validated before they reach argv.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

from bot_bottle.orchestrator.model import OrchestratorError

log = logging.getLogger(__name__)

SLUG_LINE = "bot-bottle: slug="
ERROR_PREFIX = "bot-bottle: error: "
SECRET_VARS = frozenset({"FORGE_TOKEN", "FORGE_WEBHOOK_SECRET"})
RUN_ENV_VARS = frozenset({"BOT_BOTTLE_FORGE_SOCKET", "BOT_BOTTLE_FORGE_RUN_TOKEN"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class RunnerError(OrchestratorError):
    """The CLI failed before or instead of running the agent, or a name was invalid."""


@dataclass(frozen=True)
class BottleExit:
    slug: str
    exit_code: int


class BottleRunner(Protocol):
    def start(self, *, agent: str, bottles: Sequence[str], label: str, prompt: str,
              env: Mapping[str, str], on_slug: Callable[[str], None]) -> BottleExit: ...

    def resume(self, *, slug: str, prompt: str, env: Mapping[str, str]) -> BottleExit: ...

    def freeze(self, slug: str) -> None: ...

    def destroy(self, slug: str) -> None: ...

    def bottle_states(self) -> dict[str, str]: ...


def _check(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise RunnerError(f"invalid {kind} name: {value!r}")
    return value


# Linux refuses one argv string over 32 pages (MAX_ARG_STRLEN, 128 KiB); say so plainly
MAX_PROMPT_BYTES = 128 * 1024 - 1


def _check_prompt(prompt: str) -> None:
    size = len(prompt.encode("utf-8", "replace"))
    if size > MAX_PROMPT_BYTES:
        raise RunnerError(f"the prompt is {size} bytes; a prompt may have at most "
                          f"{MAX_PROMPT_BYTES} (shorten the issue or comment)")
    if "\x00" in prompt:
        raise RunnerError("the prompt contains a NUL character")


def sanitized_env(base: Mapping[str, str], extra: Mapping[str, str] = {}) -> dict[str, str]:
    """`base` without forge secrets, plus the run variables of `extra` (others refused)."""
    unknown = set(extra) - RUN_ENV_VARS
    if unknown:
        raise RunnerError(f"runner env may only carry {sorted(RUN_ENV_VARS)}, got {sorted(unknown)}")
    env = {k: v for k, v in base.items() if k not in SECRET_VARS}
    env.update(extra)
    return env


class SubprocessBottleRunner:
    """Runs `cli + [subcommand, ...]` as a child process (argv lists, never a shell)."""

    def __init__(self, cli: Sequence[str], env: Mapping[str, str], *,
                 timeout: float = 300.0) -> None:
        self._cli = list(cli)
        self._env = sanitized_env(env)
        self._timeout = timeout  # for the short commands (commit, destroy, list)

    def _blocking(self, args: list[str], env: Mapping[str, str],
                  on_slug: Callable[[str], None] | None) -> BottleExit:
        try:
            proc = subprocess.Popen(self._cli + args, env=sanitized_env(self._env, env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, errors="replace")
        except (OSError, ValueError) as exc:  # missing CLI, argv too long, NUL in argv
            raise RunnerError(f"cannot run bot-bottle {args[0]}: {exc}") from exc
        slug: str | None = None
        error: str | None = None
        assert proc.stderr is not None
        with proc:
            for line in proc.stderr:
                line = line.rstrip("\n")
                if slug is None and error is None and line.startswith(SLUG_LINE):
                    slug = _check("slug", line[len(SLUG_LINE):].strip(), _SLUG_RE)
                    if on_slug is not None:
                        on_slug(slug)
                elif line.startswith(ERROR_PREFIX) and error is None:
                    error = line[len(ERROR_PREFIX):]
                else:
                    log.debug("bottle stderr: %s", line)
            code = proc.wait()
        if slug is None:
            raise RunnerError(error or f"bot-bottle {args[0]} exited {code} without a slug line")
        return BottleExit(slug, code)

    def start(self, *, agent, bottles, label, prompt, env, on_slug) -> BottleExit:
        _check_prompt(prompt)
        args = ["start", _check("agent", agent, _NAME_RE), "--headless", "--label", label,
                "--prompt", prompt]
        for bottle in bottles:
            args += ["--bottle", _check("bottle", bottle, _NAME_RE)]
        return self._blocking(args, env, on_slug)

    def resume(self, *, slug, prompt, env) -> BottleExit:
        _check_prompt(prompt)
        args = ["resume", _check("slug", slug, _SLUG_RE), "--headless", "--prompt", prompt]
        return self._blocking(args, env, None)

    def _short(self, args: list[str]) -> str:
        try:
            done = subprocess.run(self._cli + args, env=self._env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=self._timeout)
        except subprocess.TimeoutExpired as exc:
            raise RunnerError(f"bot-bottle {args[0]} timed out after {self._timeout}s") from exc
        except (OSError, ValueError) as exc:
            raise RunnerError(f"cannot run bot-bottle {args[0]}: {exc}") from exc
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith(ERROR_PREFIX)]
            reason = lines[0][len(ERROR_PREFIX):] if lines else f"exit {done.returncode}"
            raise RunnerError(f"bot-bottle {args[0]} failed: {reason}")
        return done.stdout

    def freeze(self, slug: str) -> None:
        self._short(["commit", _check("slug", slug, _SLUG_RE)])

    def destroy(self, slug: str) -> None:
        self._short(["destroy", _check("slug", slug, _SLUG_RE)])

    def bottle_states(self) -> dict[str, str]:
        out = self._short(["list", "--json"])
        try:
            rows = json.loads(out)
            return {str(r["slug"]): str(r["state"]) for r in rows}
        except (ValueError, TypeError, KeyError) as exc:
            raise RunnerError(f"bot-bottle list --json printed something unexpected: {exc}") from exc
