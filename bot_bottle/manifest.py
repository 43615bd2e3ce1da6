"""Agent and bottle manifests: TOML files under $BOT_BOTTLE_HOME, parsed into frozen dataclasses.

Agent (`agents/<name>.toml`): provider, bottles, model, skills, env (table of str), command.
Bottle (`bottles/<name>.toml`): backend, repo | dir, env (list of host var names), network, image.
Every problem raises ManifestError naming the file, the key and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ManifestError, UsageError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROVIDERS = ("claude", "codex", "pi", "command")


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


@dataclass(frozen=True)
class Bottle:
    name: str
    backend: str = "bwrap"
    repo: str | None = None
    dir: str | None = None
    env: tuple[str, ...] = ()
    network: str = "none"
    image: str | None = None


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


def _unknown(path, data, allowed):
    for key in data:
        if key not in allowed:
            raise ManifestError(f"{path}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def load_agent(home: Path, name: str) -> Agent:
    validate_name("agent", name)
    path = home / "agents" / f"{name}.toml"
    data = _load(path)
    _unknown(path, data, ("provider", "bottles", "model", "skills", "env", "command"))
    provider = _check(path, data, "provider", str, f"one of {PROVIDERS}", required=True)
    if provider not in PROVIDERS:
        raise ManifestError(f"{path}: key 'provider' must be one of {PROVIDERS}")
    bottles = _check(path, data, "bottles", list, "a list of bottle names", required=True)
    for b in bottles:
        if not NAME_RE.match(b):
            raise ManifestError(f"{path}: key 'bottles' has invalid name {b!r}")
    env = _check(path, data, "env", dict, "a table of strings") or {}
    for k in env:
        if not ENV_NAME_RE.match(k):
            raise ManifestError(f"{path}: key 'env' has invalid variable name {k!r}")
    command = _check(path, data, "command", list, "a list of strings (argv)") or []
    if provider == "command" and not command:
        raise ManifestError(f"{path}: missing key 'command' (argv list, required for provider 'command')")
    return Agent(name=name, provider=provider, bottles=tuple(bottles),
                 model=_check(path, data, "model", str, "a string"),
                 skills=tuple(_check(path, data, "skills", list, "a list of strings") or ()),
                 env=tuple(sorted(env.items())), command=tuple(command))


def load_bottle(home: Path, name: str) -> Bottle:
    validate_name("bottle", name)
    path = home / "bottles" / f"{name}.toml"
    data = _load(path)
    _unknown(path, data, ("backend", "repo", "dir", "env", "network", "image"))
    backend = _check(path, data, "backend", str, "'bwrap' or 'docker'") or "bwrap"
    if backend not in ("bwrap", "docker"):
        raise ManifestError(f"{path}: key 'backend' must be 'bwrap' or 'docker'")
    repo = _check(path, data, "repo", str, "a git URL or path")
    dir_ = _check(path, data, "dir", str, "a directory path")
    if (repo is None) == (dir_ is None):
        raise ManifestError(f"{path}: exactly one of keys 'repo' and 'dir' is required")
    env = _check(path, data, "env", list, "a list of host variable names") or []
    for k in env:
        if not ENV_NAME_RE.match(k):
            raise ManifestError(f"{path}: key 'env' has invalid variable name {k!r}")
    network = _check(path, data, "network", str, "'none' or 'host'") or "none"
    if network not in ("none", "host"):
        raise ManifestError(f"{path}: key 'network' must be 'none' or 'host'")
    return Bottle(name=name, backend=backend, repo=repo, dir=dir_, env=tuple(env),
                  network=network, image=_check(path, data, "image", str, "a string"))
