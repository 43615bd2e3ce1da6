"""From manifests to a RunPlan: the bottle's environment, skills, tools, PATH, time limit and
network (with the egress gate's plan), and the checks made before anything is created (tools
allowed, skills present, the provider's program visible in the bottle). Also which bottle
variables are secrets (`SAFE_ENV`).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import state
from .backend import get_backend
from .backend.base import IN_FORGE_SOCKET, IN_HOME, IN_PKG, IN_RUN, IN_WORKSPACE, RunPlan
from .errors import BackendError, ManifestError, UsageError
from .gate import plan as egress_plan
from .manifest import load_agent, load_bottle
from .providers import agent_argv, get_provider

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# The bottle variables whose values are not secrets: shown by --dry-run, not redacted from the
# agent log. So are the providers' fixed `env()` variables (see `secret_values`); every other
# bottle variable (API keys, the run token, the agent's env table) is treated as a secret.
SAFE_ENV = frozenset({"PATH", "HOME", "LANG", "BOT_BOTTLE_PROMPT_FILE", "BOT_BOTTLE_SKILLS",
                      "BOT_BOTTLE_FORGE_SOCKET"})
# where the bottle's own mounts go: a tool may not cover them, nor sit inside them (but for
# /tmp: a host dir under /tmp is bound inside the bottle's private /tmp just fine)
RESERVED = (IN_WORKSPACE, IN_HOME, IN_RUN, os.path.dirname(IN_PKG), "/proc", "/dev", "/tmp")


def _bottle_env(agent, bottles, environ) -> dict:
    env = {"PATH": ":".join([*agent.path, DEFAULT_PATH]), "HOME": IN_HOME, "LANG": "C.UTF-8",
           "BOT_BOTTLE_PROMPT_FILE": IN_RUN + "/prompt.txt"}
    env.update(get_provider(agent.provider).env(agent))
    for b in bottles:
        for name in b.env:
            if name in environ:
                env[name] = environ[name]
    env.update(dict(agent.env))
    return env


def _skills(home: Path, agent) -> dict[str, Path]:
    """The agent's skills: each `$BOT_BOTTLE_HOME/skills/<name>/` folder holding a SKILL.md."""
    found = {}
    for name in agent.skills:
        folder = home / "skills" / name   # the name matched NAME_RE in the manifest
        if not (folder / "SKILL.md").is_file():
            raise ManifestError(f"agent {agent.name}: skill {name!r} not found "
                                f"(expected {folder}/SKILL.md)")
        found[name] = folder
    return found


def _covers(a: str, b: str) -> bool:
    """`a` is `b` or one of its ancestors."""
    return a == b or b.startswith(a.rstrip("/") + "/")


def _check_tools(home: Path, agent) -> None:
    """Tools are the operator's choice, but none may expose $BOT_BOTTLE_HOME (other bottles,
    agent logs) or cover the bottle's own mounts."""
    path = home / "agents" / f"{agent.name}.toml"
    home_real = os.path.realpath(home)
    for tool in agent.tools:
        real = os.path.realpath(tool)
        if any(_covers(tool, r) or (r != "/tmp" and _covers(r, tool)) for r in RESERVED) \
                or _covers(real, home_real) or _covers(home_real, real):
            raise ManifestError(f"{path}: key 'tools' entry {tool!r} overlaps $BOT_BOTTLE_HOME "
                                f"or a bottle path ({', '.join(RESERVED)})")


def _forge(environ, env) -> str | None:
    sock = environ.get("BOT_BOTTLE_FORGE_SOCKET")
    if sock:
        env["BOT_BOTTLE_FORGE_SOCKET"] = IN_FORGE_SOCKET
        env["BOT_BOTTLE_FORGE_RUN_TOKEN"] = environ.get("BOT_BOTTLE_FORGE_RUN_TOKEN", "")
    return sock or None


def default_network(provider_name: str) -> str:
    """A provider that names API hosts gets the egress gate; one that names none (command)
    gets no network at all."""
    return "egress" if get_provider(provider_name).HOSTS else "none"


def _network(agent, bottles) -> str:
    chosen = {b.network or default_network(agent.provider) for b in bottles}
    if len(chosen) != 1:
        raise ManifestError(f"bottles disagree on network ({', '.join(sorted(chosen))})")
    return chosen.pop()


def _egress(agent, bottles, env, environ):
    """The gate's plan (and its variables set in `env`) for an egress bottle."""
    try:
        return egress_plan.build(agent.provider, get_provider(agent.provider).HOSTS,
                                 [e for b in bottles for e in b.egress], env, environ)
    except ValueError as exc:
        raise UsageError(f"egress gate: {exc}") from None


def _timeout(agent, bottles) -> int | None:
    limits = [t for t in (agent.timeout, *(b.timeout for b in bottles)) if t is not None]
    return min(limits) if limits else None


def _resources(bottles) -> dict:
    """The bottles' `cpu` and `memory` (kubernetes only); bottles that disagree are an error."""
    found: dict = {}
    for b in bottles:
        for key in ("cpu", "memory"):
            value = getattr(b, key)
            if value is not None and found.setdefault(key, value) != value:
                raise ManifestError(f"bottles disagree on {key} ({found[key]} vs {value})")
    return found


def resolve(home: Path, agent_name: str, bottle_names, environ, slug: str, *, resume=False):
    """(agent, bottles, plan, backend) for a start or resume; raises before anything exists."""
    agent = load_agent(home, agent_name, environ.get("HOME"))
    bottles = [load_bottle(home, n) for n in (bottle_names or agent.bottles)]
    if not bottles:
        raise ManifestError(f"agent {agent.name}: no bottles (set 'bottles' or pass --bottle)")
    if len({b.backend for b in bottles}) != 1:
        raise ManifestError("bottles disagree on backend")
    network = _network(agent, bottles)
    _check_tools(home, agent)
    env = _bottle_env(agent, bottles, environ)
    egress = _egress(agent, bottles, env, environ) if network == "egress" else None
    sdir = state.state_dir(home, slug)
    plan = RunPlan(slug=slug, state_dir=sdir,
                   agent_argv=tuple(agent_argv(agent, resume=resume)), env=env,
                   stdin=sdir / "prompt.txt", skills=_skills(home, agent), agent=agent,
                   network=network, forge_socket=_forge(environ, env), image=bottles[0].image,
                   tools=agent.tools, timeout=_timeout(agent, bottles), egress=egress,
                   resources=_resources(bottles))
    return agent, bottles, plan, get_backend(bottles[0].backend, environ)


def check_program(backend, plan) -> None:
    """Exit 4 (BackendError) unless the provider's program (and, for egress, python3 for the
    gate's forwarder) resolves inside the bottle."""
    check_forwarder(backend, plan)
    agent = plan.agent
    program = get_provider(agent.provider).BINARY or agent.command[0]
    found = backend.locate(plan, program)
    if found is None or found.path or found.unchecked:
        return
    if found.outside:
        raise BackendError(f"agent {agent.name!r}: {program!r} resolves to {found.outside}, which is "
                           "not bound into the bottle; add its directory to the agent's tools")
    where = "inside the bottle" if "/" in program else f"on the bottle's PATH ({plan.env.get('PATH', '')})"
    raise BackendError(f"agent {agent.name!r}: {program!r} not found {where}; "
                       "add its directory to the agent's path/tools")


def check_forwarder(backend, plan) -> None:
    """An egress bottle runs the gate's forwarder with the bottle's python3: exit 4 without one."""
    if plan.network != "egress":
        return
    found = backend.locate(plan, "python3")
    if found is not None and not found.path and not found.unchecked:
        raise BackendError(f"network = \"egress\" needs python3 in the bottle (for the gate's "
                           f"forwarder); none on its PATH ({plan.env.get('PATH', '')})")


def safe_names(plan) -> set[str]:
    """Bottle variables whose values are not secrets: SAFE_ENV and the provider's fixed ones
    (unless the manifests changed their value)."""
    fixed = get_provider(plan.agent.provider).env(plan.agent)
    if plan.egress is not None:   # the proxy URLs, the gate's base URL, the placeholder key
        fixed = {**fixed, **plan.egress.env}
    return set(SAFE_ENV) | {k for k, v in fixed.items() if plan.env.get(k) == v}


def secret_values(plan) -> list[str]:
    """The values to redact from the agent log: every other bottle variable's."""
    safe = safe_names(plan)
    keys = plan.egress.keys() if plan.egress is not None else []   # never in the bottle; belt and braces
    return [v for k, v in plan.env.items() if k not in safe and v] + keys
