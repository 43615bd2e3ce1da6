"""The orchestrator's one `Config`: every environment variable of the spec, parsed and
checked once by `Config.from_env(mapping)`, which reports all problems in one `ConfigError`.

Only `__main__` reads `os.environ`; it passes the mapping in. Secrets are kept out of repr.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bot_bottle.orchestrator.model import OrchestratorError

# The core CLI inherits the orchestrator's environment except these: the orchestrator's own
# settings (FORGE_*: the Gitea token and webhook secret among them) and systemd's service
# variables. The CLI is host code we trust; a bottle sees only what its manifests name, so a
# provider key such as ANTHROPIC_API_KEY can live in the service's EnvironmentFile.
CHILD_ENV_EXCLUDED_PREFIXES = ("FORGE_",)
CHILD_ENV_EXCLUDED = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "INVOCATION_ID"})


class ConfigError(OrchestratorError):
    """One or more bad or missing settings; `problems` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Config:
    home: str
    gitea_url: str
    agent_org: str
    token: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8477
    db_path: str = ""
    queue_dir: str = ""
    sidecar_socket: str = ""
    watchdog_timeout: int = 1800
    max_concurrent_runs: int = 4
    gitea_timeout: float = 10.0
    outbox_backoff: float = 30.0
    # the worker pool for freezes, destroys and PR openings (never the dispatcher thread), and
    # the waits before a failed one is tried again (len + 1 attempts in all)
    bottle_workers: int = 4
    bottle_retry_delays: tuple[float, ...] = (5.0, 30.0)
    # how much lower than the service's the CPU priority of starts and resumes (and so of the
    # agents) is: under load the service's acks and dispatcher come first
    bottle_nice: int = 10
    # starts between their clone and their bottle's slug line at once (the CPUs, at least 2)
    starts_at_once: int = 2
    clone_workspace: bool = True  # the repository is the bottle's workspace
    clone_timeout: float = 600.0
    # processed webhook deliveries are kept this long, then pruned (dedupe works within it)
    delivery_retention_days: int = 14
    # where people reach the service (PR bodies link a run's provenance there); "" = the
    # webhook listener's own address
    public_url: str = ""
    # Host names (`name` or `name:port`, lower case) the webhook port answers besides its own
    # listen address: FORGE_ALLOWED_HOSTS plus FORGE_PUBLIC_URL's host (a reverse proxy)
    allowed_hosts: tuple[str, ...] = ()
    cli: tuple[str, ...] = (sys.executable, "-m", "bot_bottle")
    child_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, for_run: bool = True) -> "Config":
        problems: list[str] = []
        get = lambda key: (environ.get(key) or "").strip()  # noqa: E731
        home = get("BOT_BOTTLE_HOME") or _join(get("HOME") or "~", ".bot-bottle")
        url = get("FORGE_GITEA_URL").rstrip("/")
        required = {"FORGE_GITEA_URL": url, "FORGE_TOKEN": get("FORGE_TOKEN"),
                    "FORGE_AGENT_ORG": get("FORGE_AGENT_ORG"),
                    "FORGE_WEBHOOK_SECRET": environ.get("FORGE_WEBHOOK_SECRET") or ""}
        if for_run:
            problems += [f"{k} is required" for k, v in required.items() if not v]
        if url and urlsplit(url).scheme not in ("http", "https"):
            problems.append("FORGE_GITEA_URL must start with http:// or https://")
        if url and not urlsplit(url).netloc:
            problems.append("FORGE_GITEA_URL has no host")
        public_url = get("FORGE_PUBLIC_URL").rstrip("/")
        if public_url and (urlsplit(public_url).scheme not in ("http", "https")
                           or not urlsplit(public_url).netloc):
            problems.append("FORGE_PUBLIC_URL must be an http:// or https:// URL")
        if url and "@" in urlsplit(url).netloc:  # it is Gitea's git URL for our clones
            problems.append("FORGE_GITEA_URL must not carry a user or password "
                            "(the token is FORGE_TOKEN)")
        allowed_hosts = _hosts(get("FORGE_ALLOWED_HOSTS"), problems)
        if public_url and urlsplit(public_url).netloc and "@" not in urlsplit(public_url).netloc:
            allowed_hosts += (urlsplit(public_url).netloc.lower(),)
        port = _int(environ, "FORGE_WEBHOOK_PORT", 8477, 0, 65535, problems)
        timeout = _int(environ, "FORGE_WATCHDOG_TIMEOUT", 1800, 1, None, problems)
        max_runs = _int(environ, "FORGE_MAX_CONCURRENT_RUNS", 4, 1, None, problems)
        gitea_timeout = _seconds(environ, "FORGE_GITEA_TIMEOUT", 10.0, problems)
        outbox_backoff = _seconds(environ, "FORGE_OUTBOX_BACKOFF", 30.0, problems)
        bottle_workers = _int(environ, "BOT_BOTTLE_BOTTLE_WORKERS", 4, 1, 64, problems)
        retry_delays = _delays(environ, "BOT_BOTTLE_BOTTLE_RETRY", (5.0, 30.0), problems)
        bottle_nice = _int(environ, "BOT_BOTTLE_BOTTLE_NICE", 10, 0, 19, problems)
        starts = _int(environ, "BOT_BOTTLE_STARTS_AT_ONCE", max(2, os.cpu_count() or 2), 1, 256,
                      problems)
        clone = _flag(environ, "FORGE_CLONE_WORKSPACE", True, problems)
        clone_timeout = _seconds(environ, "FORGE_CLONE_TIMEOUT", 600.0, problems)
        retention = _int(environ, "FORGE_DELIVERY_RETENTION_DAYS", 14, 1, 3650, problems)
        try:
            # unset means "python -m bot_bottle" with *this* interpreter: Debian has no
            # `python`, and a venv's packages are only importable by its own interpreter
            raw_cli = environ.get("BOT_BOTTLE_CLI") or ""
            cli = tuple(shlex.split(raw_cli)) if raw_cli else (sys.executable, "-m", "bot_bottle")
            if not cli:
                problems.append("BOT_BOTTLE_CLI is empty")
        except ValueError as exc:
            problems.append(f"BOT_BOTTLE_CLI cannot be parsed: {exc}")
            cli = ()
        if problems:
            raise ConfigError(problems)
        child = {k: v for k, v in environ.items()
                 if k not in CHILD_ENV_EXCLUDED and not k.startswith(CHILD_ENV_EXCLUDED_PREFIXES)}
        child["BOT_BOTTLE_HOME"] = home
        return cls(
            home=home, gitea_url=url, agent_org=required["FORGE_AGENT_ORG"],
            token=required["FORGE_TOKEN"], webhook_secret=required["FORGE_WEBHOOK_SECRET"],
            webhook_host=get("FORGE_WEBHOOK_HOST") or "127.0.0.1", webhook_port=port,
            db_path=get("FORGE_DB_PATH") or _join(home, "orchestrator.db"),
            queue_dir=get("FORGE_QUEUE_DIR") or _join(home, "queue"),
            sidecar_socket=get("FORGE_SIDECAR_SOCKET") or _join(home, "forge-sidecar.sock"),
            watchdog_timeout=timeout, max_concurrent_runs=max_runs,
            gitea_timeout=gitea_timeout, outbox_backoff=outbox_backoff,
            bottle_workers=bottle_workers, bottle_retry_delays=retry_delays,
            bottle_nice=bottle_nice, starts_at_once=starts, clone_workspace=clone, clone_timeout=clone_timeout,
            delivery_retention_days=retention, public_url=public_url,
            allowed_hosts=tuple(dict.fromkeys(allowed_hosts)), cli=cli,
            child_env=child)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


_HOST = re.compile(r"^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?$")


def _hosts(raw: str, problems: list[str]) -> tuple[str, ...]:
    """FORGE_ALLOWED_HOSTS: comma-separated `name` or `name:port` (a port from 1 to 65535)."""
    hosts = []
    for entry in filter(None, (e.strip().lower() for e in raw.split(","))):
        match = _HOST.match(entry)
        if not match or (match.group(2) and not 0 < int(match.group(2)) <= 65535):
            problems.append(f"FORGE_ALLOWED_HOSTS entries must be host or host:port, "
                            f"got {entry[:80]!r}")
            continue
        hosts.append(entry)
    return tuple(hosts)


def _number(environ, key, default, parse, ok, expected: str, problems):
    """`key` parsed by `parse` and checked by `ok`; a problem naming `expected` otherwise."""
    raw = (environ.get(key) or "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not ok(value):
        problems.append(f"{key} must be {expected}, got {raw!r}")
        return default
    return value


def _int(environ, key, default, low, high, problems) -> int:
    upper = f"..{high}" if high is not None else " or more"
    return _number(environ, key, default, int,
                   lambda v: v >= low and (high is None or v <= high),
                   f"an integer {low}{upper}", problems)


_FLAGS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def _flag(environ, key, default: bool, problems) -> bool:
    return _number(environ, key, default, lambda raw: _FLAGS.get(raw.lower()),
                   lambda v: True, "one of 1/0, true/false, yes/no, on/off", problems)


def _seconds(environ, key, default, problems) -> float:
    return _number(environ, key, default, float, lambda v: 0 < v <= 3600,
                   "a number of seconds, more than 0 and at most 3600", problems)


def _delays(environ, key, default: tuple[float, ...], problems) -> tuple[float, ...]:
    """Comma-separated seconds (each 0..3600, at most 10): the waits between the attempts of
    a failing bottle operation; "none" means a single attempt."""
    raw = (environ.get(key) or "").strip()
    if not raw:
        return default
    if raw.lower() == "none":
        return ()
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        values = None
    if values is None or len(values) > 10 or not all(0 <= v <= 3600 for v in values):
        problems.append(f"{key} must be up to 10 comma-separated numbers of seconds "
                        f"(0..3600 each) or none, got {raw[:80]!r}")
        return default
    return values
