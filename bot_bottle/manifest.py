"""Agent and bottle manifests: TOML files under $BOT_BOTTLE_HOME, parsed into frozen dataclasses.

Agent (`agents/<name>.toml`): provider, bottles, model, skills, env (table of str), command,
timeout (wall-time seconds), tools (host paths bound read-only at the same path), path (dirs
prepended to the bottle's PATH; `~/` in both = the invoking user's home).
Bottle (`bottles/<name>.toml`): backend, repo | dir (both optional, at most one), env (list of
host var names), network (none | egress | host; unset = the provider's default, see `resolve`),
egress (hostnames or `*.suffix` the egress gate lets through; implies network = "egress"),
image, timeout, and for backend = "kubernetes" only: cpu and memory (Kubernetes quantities such
as "500m" or "2Gi"; the pod's requests and limits).
Every problem raises ManifestError naming the file, the key and what was expected.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ManifestError, UsageError
from .gate.policy import check_entry

# an agent or bottle name: also a directory, an argv word and a label suffix everywhere
NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
NAME_RE = re.compile(rf"^{NAME}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROVIDERS = ("claude", "codex", "pi", "command")
NETWORKS = ("none", "egress", "host")
BACKENDS = ("bwrap", "docker", "kubernetes")
# a Kubernetes resource quantity: digits, an optional fraction, an optional SI or binary suffix
QUANTITY_RE = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,6})?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def validate_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: expected {NAME_RE.pattern}")
    return name


@dataclass(frozen=True)
class Agent:
    name: str
    provider: str
    bottles: tuple[str, ...]
    model: str | None = None
    skills: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    timeout: int | None = None
    tools: tuple[str, ...] = ()     # absolute host paths (`~/` already expanded)
    path: tuple[str, ...] = ()      # absolute dirs inside the bottle


@dataclass(frozen=True)
class Bottle:
    name: str
    backend: str = "bwrap"
    repo: str | None = None
    dir: str | None = None
    env: tuple[str, ...] = ()
    network: str | None = None      # None: the manifest does not say (the provider decides)
    image: str | None = None
    timeout: int | None = None
    egress: tuple[str, ...] = ()    # allowlist entries for the egress gate
    cpu: str | None = None          # kubernetes only: the pod's cpu request and limit
    memory: str | None = None       # kubernetes only: the pod's memory request and limit


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: malformed TOML: {exc}") from exc


def _check(path, data, key, typ, expected, required=False):
    if key not in data:
        if required:
            raise ManifestError(f"{path}: missing key {key!r} ({expected})")
        return None
    value = data[key]
    ok = isinstance(value, typ)
    if ok and isinstance(value, list):
        ok = all(isinstance(v, str) for v in value)
    if ok and isinstance(value, dict):
        ok = all(isinstance(v, str) for v in value.values())
    if not ok:
        raise ManifestError(f"{path}: key {key!r} must be {expected}")
    return value


def _timeout(path, data) -> int | None:
    value = data.get("timeout")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ManifestError(f"{path}: key 'timeout' must be a whole number of seconds >= 1")
    return value


def _abs_path(path, key, raw: str, user_home: str | None) -> str:
    """`raw` as an absolute, normalised path: absolute or `~/...` (the invoking user's home);
    no `..`, no `:` (a PATH and docker -v separator)."""
    if raw == "~" or raw.startswith("~/"):
        if not user_home or not os.path.isabs(user_home):
            raise ManifestError(f"{path}: key {key!r} entry {raw!r} uses '~' but HOME is not set")
        raw = user_home.rstrip("/") + raw[1:]
    if not os.path.isabs(raw):
        raise ManifestError(f"{path}: key {key!r} entry {raw!r} must be an absolute path or start with '~/'")
    if ".." in raw.split("/") or ":" in raw:
        raise ManifestError(f"{path}: key {key!r} entry {raw!r} must not contain '..' or ':'")
    return os.path.normpath(raw)


def _unknown(path, data, allowed):
    for key in data:
        if key not in allowed:
            raise ManifestError(f"{path}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _names(path, key, values, pattern=NAME_RE, what="name"):
    for v in values:
        if not pattern.match(v):
            raise ManifestError(f"{path}: key {key!r} has invalid {what} {v!r}")
    return values


def load_agent(home: Path, name: str, user_home: str | None = None) -> Agent:
    """`user_home` is the invoking user's home (`HOME`), used for `~/` in `tools` and `path`."""
    validate_name("agent", name)
    path = home / "agents" / f"{name}.toml"
    data = _load(path)
    _unknown(path, data, ("provider", "bottles", "model", "skills", "env", "command",
                          "timeout", "tools", "path"))
    provider = _check(path, data, "provider", str, f"one of {PROVIDERS}", required=True)
    if provider not in PROVIDERS:
        raise ManifestError(f"{path}: key 'provider' must be one of {PROVIDERS}")
    bottles = _names(path, "bottles", _check(path, data, "bottles", list, "a list of bottle names",
                                             required=True))
    env = _check(path, data, "env", dict, "a table of strings") or {}
    _names(path, "env", list(env), ENV_NAME_RE, "variable name")
    command = _check(path, data, "command", list, "a list of strings (argv)") or []
    if provider == "command" and not command:
        raise ManifestError(f"{path}: missing key 'command' (argv list, required for provider 'command')")
    skills = _names(path, "skills", _check(path, data, "skills", list, "a list of skill names") or [])
    tools = [_abs_path(path, "tools", t, user_home)
             for t in _check(path, data, "tools", list, "a list of host paths") or []]
    for t in tools:
        if not os.path.exists(t):
            raise ManifestError(f"{path}: key 'tools' entry {t!r} does not exist")
    dirs = [_abs_path(path, "path", d, user_home)
            for d in _check(path, data, "path", list, "a list of absolute directories") or []]
    return Agent(name=name, provider=provider, bottles=tuple(bottles),
                 model=_check(path, data, "model", str, "a string"), skills=tuple(skills),
                 env=tuple(sorted(env.items())), command=tuple(command),
                 timeout=_timeout(path, data), tools=tuple(tools), path=tuple(dirs))


def load_bottle(home: Path, name: str) -> Bottle:
    validate_name("bottle", name)
    path = home / "bottles" / f"{name}.toml"
    data = _load(path)
    _unknown(path, data, ("backend", "repo", "dir", "env", "network", "egress", "image", "timeout",
                          "cpu", "memory"))
    expected = "'bwrap', 'docker' or 'kubernetes'"
    backend = _check(path, data, "backend", str, expected) or "bwrap"
    if backend not in BACKENDS:
        raise ManifestError(f"{path}: key 'backend' must be {expected}")
    cpu, memory = (_quantity(path, data, key, backend) for key in ("cpu", "memory"))
    repo = _check(path, data, "repo", str, "a git URL or path")
    dir_ = _check(path, data, "dir", str, "a directory path")
    if repo is not None and dir_ is not None:
        raise ManifestError(f"{path}: keys 'repo' and 'dir' exclude each other (at most one)")
    env = _names(path, "env", _check(path, data, "env", list, "a list of host variable names") or [],
                 ENV_NAME_RE, "variable name")
    network = _check(path, data, "network", str, "'none', 'egress' or 'host'")
    if network is not None and network not in NETWORKS:
        raise ManifestError(f"{path}: key 'network' must be 'none', 'egress' or 'host'")
    egress = _egress(path, data)
    if egress and network not in (None, "egress"):
        raise ManifestError(f"{path}: key 'egress' needs network = \"egress\" (the bottle says {network!r})")
    return Bottle(name=name, backend=backend, repo=repo, dir=dir_, env=tuple(env),
                  network="egress" if egress and network is None else network,
                  image=_check(path, data, "image", str, "a string"), timeout=_timeout(path, data),
                  egress=egress, cpu=cpu, memory=memory)


def _quantity(path, data, key, backend) -> str | None:
    """`cpu` or `memory`: a Kubernetes quantity, only where a backend applies it."""
    value = _check(path, data, key, str, 'a Kubernetes quantity string such as "500m" or "2Gi"')
    if value is None:
        return None
    if backend != "kubernetes":
        raise ManifestError(f"{path}: key {key!r} needs backend = \"kubernetes\" (the bottle says {backend!r})")
    if not QUANTITY_RE.match(value) or not re.search(r"[1-9]", value.rstrip("mkMGTPi")):
        raise ManifestError(f"{path}: key {key!r} must be a Kubernetes quantity such as \"500m\" "
                            f"or \"2Gi\", above zero (got {value!r})")
    return value


def _egress(path, data) -> tuple[str, ...]:
    """The `egress` allowlist: host names, or `*.suffix`; never IP addresses."""
    entries = _check(path, data, "egress", list, "a list of host names") or []
    out = []
    for raw in entries:
        try:
            out.append(check_entry(raw))
        except ValueError as exc:
            raise ManifestError(f"{path}: key 'egress' entry {raw!r} {exc}") from None
    return tuple(dict.fromkeys(out))
