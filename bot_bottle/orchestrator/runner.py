"""The bottle runner port (`BottleRunner`, architecture §5) and its real adapter,
`SubprocessBottleRunner`, which drives the core CLI (`python -m bot_bottle ...`).

The runner never hands the orchestrator's forge secrets to the CLI: the child environment
is the configured base environment minus `FORGE_TOKEN`/`FORGE_WEBHOOK_SECRET`, plus only
the per-run `env` (sidecar socket and run token). Names are validated before they reach argv.
The prompt goes to the CLI on stdin (`--prompt-file -`), never in argv (world-readable, and
one argv string is limited to 128 KiB). Whatever the CLI prints, memory stays bounded: its
output is read a line at a time and a line is cut at `MAX_LINE` bytes, the rest skipped. The
egress gate's refusal lines go to `egress_log` (logged with the run, counted for /metrics).
A start or resume whose CLI printed the slug and then an error line raises `RunnerError` with
that line when `list` no longer shows the bottle (the CLI removes one whose agent never started:
the kubernetes backend's first pod that cannot start); with the bottle still there the line is
logged and the exit code returned as usual.
A start or resume runs `nice`d (`BOT_BOTTLE_BOTTLE_NICE`, default 10; the agent inherits it), so
under a launch storm or a busy agent the service's own threads (webhook acks, the dispatcher)
get the CPU first; an idle machine gives the agent all of it anyway.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Protocol, Sequence

from bot_bottle.manifest import NAME_RE
from bot_bottle.orchestrator.egress_log import EgressRefusals
from bot_bottle.orchestrator.model import OrchestratorError
from bot_bottle.orchestrator.priority import niced
from bot_bottle.state import SLUG_RE

log = logging.getLogger(__name__)

SLUG_LINE = "bot-bottle: slug="
ERROR_PREFIX = "bot-bottle: error: "
TIMEOUT_PREFIX = "bot-bottle: timeout: "  # the core stopped the agent at its wall-time limit
TIMEOUT_EXIT = 124
MAX_LINE = 64 * 1024  # bytes of one line of CLI output kept; the rest of the line is skipped
TAIL_LINE = 4096  # bytes of one line of `logs --tail` kept (comments show far less)
SECRET_VARS = frozenset({"FORGE_TOKEN", "FORGE_WEBHOOK_SECRET"})
RUN_ENV_VARS = frozenset({"BOT_BOTTLE_FORGE_SOCKET", "BOT_BOTTLE_FORGE_RUN_TOKEN"})


class RunnerError(OrchestratorError):
    """The CLI failed before or instead of running the agent, or a name was invalid."""


class BottleGone(RunnerError):
    """The CLI made the bottle (its slug line) and removed it again before the agent ran
    (a pod that never started, say): there is nothing to freeze, and the start can be made
    again."""


@dataclass(frozen=True)
class BottleExit:
    """How the agent's run ended: its exit code, and whether the core stopped it at its
    wall-time limit (`limit` seconds, when the CLI's timeout line names them)."""
    slug: str
    exit_code: int
    timed_out: bool = False
    limit: int | None = None


class BottleRunner(Protocol):
    def start(self, *, agent: str, bottles: Sequence[str], label: str, prompt: str,
              env: Mapping[str, str], on_slug: Callable[[str], None],
              workspace: str | None = None) -> BottleExit: ...

    def resume(self, *, slug: str, prompt: str, env: Mapping[str, str]) -> BottleExit: ...

    def freeze(self, slug: str) -> None: ...

    def destroy(self, slug: str) -> None: ...

    def bottle_states(self) -> dict[str, str]: ...

    def log_tail(self, slug: str, lines: int) -> str: ...


def _check(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise RunnerError(f"invalid {kind} name: {value!r}")
    return value


def _check_path(path: str) -> str:
    # an absolute path can never be read as an option, and the CLI must not guess a base
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise RunnerError(f"invalid workspace path: {path!r}")
    return path


# the prompt travels on stdin, so argv limits do not apply; this bound keeps a bottle's
# prompt file (and the store row it came from) sane
MAX_PROMPT_BYTES = 1024 * 1024


def _prompt_bytes(prompt: str) -> bytes:
    data = prompt.encode("utf-8", "replace")
    if len(data) > MAX_PROMPT_BYTES:
        raise RunnerError(f"the prompt is {len(data)} bytes; a prompt may have at most "
                          f"{MAX_PROMPT_BYTES} (1 MiB; shorten the issue or comment)")
    if "\x00" in prompt:
        raise RunnerError("the prompt contains a NUL character")
    return data


def bounded_lines(stream, limit: int) -> Iterator[bytes]:
    """The lines of a binary stream without their newline, each cut at `limit` bytes: the
    rest of an over-long line is read and dropped, never held, whatever arrives."""
    while True:
        chunk = stream.readline(limit)
        if not chunk:
            return
        if chunk.endswith(b"\n"):
            yield chunk[:-1]
            continue
        rest = chunk
        while rest and not rest.endswith(b"\n"):
            rest = stream.readline(limit)
        yield chunk


def _first_error(stream, found: list[str]) -> None:
    """Read `stream` to its end, keeping the first `bot-bottle: error:` line's message."""
    for raw in bounded_lines(stream, MAX_LINE):
        line = raw.decode("utf-8", "replace")
        if not found and line.startswith(ERROR_PREFIX):
            found.append(line[len(ERROR_PREFIX):][:2000])


def _feed(pipe, data: bytes) -> None:
    # on its own thread: a CLI that writes before it reads its stdin must not deadlock us
    try:
        pipe.write(data)
    except (BrokenPipeError, ValueError, OSError):
        pass  # the CLI exited without reading it; its error line says why
    finally:
        try:
            pipe.close()
        except OSError:
            pass


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
                 timeout: float = 300.0, refusals: EgressRefusals | None = None,
                 nice: int = 0) -> None:
        self._cli = list(cli)
        self._agent_cli = niced(self._cli, nice)  # for start and resume, which run agents
        self._env = sanitized_env(env)
        self._timeout = timeout  # for the short commands (commit, destroy, list)
        self.refusals = refusals or EgressRefusals()

    def _blocking(self, args: list[str], env: Mapping[str, str], prompt: bytes,
                  on_slug: Callable[[str], None] | None) -> BottleExit:
        try:
            proc = subprocess.Popen(self._agent_cli + args, env=sanitized_env(self._env, env),
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
        except (OSError, ValueError) as exc:  # missing CLI, NUL in argv
            raise RunnerError(f"cannot run bot-bottle {args[0]}: {exc}") from exc
        feeder = threading.Thread(target=_feed, args=(proc.stdin, prompt), daemon=True,
                                  name=f"bot-bottle-{args[0]}-stdin")
        slug: str | None = None
        error: str | None = None
        timeout: str | None = None
        refused = self.refusals.watch(env.get("BOT_BOTTLE_FORGE_RUN_TOKEN"))
        assert proc.stderr is not None
        with proc:
            feeder.start()
            for raw in bounded_lines(proc.stderr, MAX_LINE):
                line = raw.decode("utf-8", "replace")
                if slug is None and error is None and line.startswith(SLUG_LINE):
                    slug = _check("slug", line[len(SLUG_LINE):].strip(), SLUG_RE)
                    refused.slug = slug
                    if on_slug is not None:
                        on_slug(slug)
                elif line.startswith(ERROR_PREFIX) and error is None:
                    error = line[len(ERROR_PREFIX):][:2000]
                elif line.startswith(TIMEOUT_PREFIX) and timeout is None:
                    timeout = line[len(TIMEOUT_PREFIX):][:2000]
                elif not refused.line(line):
                    log.debug("bottle stderr: %s", line[:2000])
            code = proc.wait()
            feeder.join(5)
        refused.close()
        if slug is None:
            raise RunnerError(error or f"bot-bottle {args[0]} exited {code} without a slug line")
        if error is not None and code != 0:
            if self._gone(slug):   # nothing to freeze: the error line is the run's story
                raise BottleGone(error)
            log.warning("bot-bottle %s %s: %s", args[0], slug, error)
        if timeout is None:
            return BottleExit(slug, code)
        limit = re.search(r"\b(\d+) ?s\b", timeout)
        return BottleExit(slug, code, timed_out=True, limit=int(limit.group(1)) if limit else None)

    def start(self, *, agent, bottles, label, prompt, env, on_slug,
              workspace: str | None = None) -> BottleExit:
        data = _prompt_bytes(prompt)
        args = ["start", _check("agent", agent, NAME_RE), "--headless", "--label", label,
                "--prompt-file", "-"]
        for bottle in bottles:
            args += ["--bottle", _check("bottle", bottle, NAME_RE)]
        if workspace is not None:
            args += ["--workspace", _check_path(workspace)]
        return self._blocking(args, env, data, on_slug)

    def resume(self, *, slug, prompt, env) -> BottleExit:
        data = _prompt_bytes(prompt)
        args = ["resume", _check("slug", slug, SLUG_RE), "--headless", "--prompt-file", "-"]
        return self._blocking(args, env, data, None)

    def log_tail(self, slug: str, lines: int = 20) -> str:
        """The last `lines` lines of the bottle's log (`bot-bottle logs SLUG --tail N`), each
        cut at `TAIL_LINE` bytes; read as it arrives, so a huge log costs no memory."""
        if not isinstance(lines, int) or not 0 < lines <= 1000:
            raise RunnerError(f"invalid number of log lines: {lines!r}")
        args = ["logs", _check("slug", slug, SLUG_RE), "--tail", str(lines)]
        try:
            proc = subprocess.Popen(self._cli + args, env=self._env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except (OSError, ValueError) as exc:
            raise RunnerError(f"cannot run bot-bottle logs: {exc}") from exc
        timer = threading.Timer(self._timeout, proc.kill)  # a hung CLI must not hold the worker
        kept: collections.deque[bytes] = collections.deque(maxlen=lines)
        errors: list[str] = []
        reader = threading.Thread(target=_first_error, args=(proc.stderr, errors), daemon=True)
        with proc:
            timer.start()
            reader.start()
            try:
                kept.extend(bounded_lines(proc.stdout, TAIL_LINE))
                code = proc.wait()
                reader.join(5)
            finally:
                timer.cancel()
        if code != 0:
            raise RunnerError(f"bot-bottle logs failed: {errors[0] if errors else f'exit {code}'}")
        return "\n".join(line.decode("utf-8", "replace") for line in kept)

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
        self._short(["commit", _check("slug", slug, SLUG_RE)])

    def destroy(self, slug: str) -> None:
        self._short(["destroy", _check("slug", slug, SLUG_RE)])

    def _gone(self, slug: str) -> bool:
        """The bottle is known not to exist (a failed `list` cannot tell: False)."""
        try:
            return slug not in self.bottle_states()
        except RunnerError:
            return False

    def bottle_states(self) -> dict[str, str]:
        out = self._short(["list", "--json"])
        try:
            rows = json.loads(out)
            return {str(r["slug"]): str(r["state"]) for r in rows}
        except (ValueError, TypeError, KeyError) as exc:
            raise RunnerError(f"bot-bottle list --json printed something unexpected: {exc}") from exc
