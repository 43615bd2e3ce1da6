"""The core operations shared by the CLI and Python callers: start, resume, freeze, destroy, list.

Callers pass `home` (the $BOT_BOTTLE_HOME path) and `environ` (the caller's environment);
nothing here reads os.environ. Errors are BottleError subclasses carrying the exit code.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from . import state
from .backend import get_backend
from .backend.base import IN_FORGE_SOCKET, IN_HOME, IN_RUN, RunPlan
from .errors import BackendError, ManifestError, StateConflictError, UsageError
from .manifest import load_agent, load_bottle, validate_name
from .providers import agent_argv


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _lock(home: Path, slug: str):
    root = home / "state"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{state.check_slug(slug)}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _bottle_env(agent, bottles, environ, prompt) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": IN_HOME, "LANG": "C.UTF-8",
           "BOT_BOTTLE_PROMPT": prompt, "BOT_BOTTLE_PROMPT_FILE": IN_RUN + "/prompt.txt"}
    for b in bottles:
        for name in b.env:
            if name in environ:
                env[name] = environ[name]
    env.update(dict(agent.env))
    if agent.skills:
        env["BOT_BOTTLE_SKILLS"] = ",".join(agent.skills)
    return env


def _forge(environ, env) -> str | None:
    sock = environ.get("BOT_BOTTLE_FORGE_SOCKET")
    if sock:
        env["BOT_BOTTLE_FORGE_SOCKET"] = IN_FORGE_SOCKET
        env["BOT_BOTTLE_FORGE_RUN_TOKEN"] = environ.get("BOT_BOTTLE_FORGE_RUN_TOKEN", "")
    return sock or None


def _resolve(home, agent_name, bottle_names, environ, prompt, slug, resume=False, agent=None):
    agent = agent or load_agent(home, agent_name)
    bottles = [load_bottle(home, n) for n in (bottle_names or agent.bottles)]
    if not bottles:
        raise ManifestError(f"agent {agent.name}: no bottles (set 'bottles' or pass --bottle)")
    if len({b.backend for b in bottles}) != 1 or len({b.network for b in bottles}) != 1:
        raise ManifestError("bottles disagree on backend or network")
    env = _bottle_env(agent, bottles, environ, prompt)
    plan = RunPlan(slug=slug, state_dir=state.state_dir(home, slug),
                   agent_argv=tuple(agent_argv(agent, prompt, resume=resume)), env=env,
                   network=bottles[0].network, forge_socket=_forge(environ, env),
                   image=bottles[0].image)
    return agent, bottles, plan, get_backend(bottles[0].backend, environ)


SAFE_ENV = {"PATH", "HOME", "LANG", "BOT_BOTTLE_PROMPT_FILE", "BOT_BOTTLE_SKILLS", "BOT_BOTTLE_FORGE_SOCKET"}


def plan_json(backend, plan) -> str:
    """The resolved plan as JSON; values of env vars other than SAFE_ENV are redacted."""
    environment = {k: v if k in SAFE_ENV else "<redacted>" for k, v in sorted(plan.env.items())}
    return json.dumps({"slug": plan.slug, "backend": backend.name, "argv": backend.command(plan),
                       "mounts": backend.mounts(plan), "env": sorted(plan.env),
                       "environment": environment}, indent=2)


def _run(home, slug, backend, plan, prompt) -> int:
    (plan.state_dir / "prompt.txt").write_text(prompt, encoding="utf-8")

    def on_pid(pid):
        with _lock(home, slug):
            state.update_metadata(home, slug, state="running", pid=pid)

    rc = backend.run(plan, on_pid)
    with _lock(home, slug):
        meta = state.read_metadata(home, slug) or {}
        if meta.get("state") == "running":
            meta["state"] = "exited"
        meta.update(pid=None, exit_code=rc)
        if meta.get("slug"):
            state.write_metadata(home, slug, meta)
    return rc


def start_headless(home: Path, agent: str, prompt: str, *, environ: dict, bottles=(),
                   label=None, dry_run=False, on_slug=None, out=None) -> int:
    validate_name("agent", agent)
    slug = state.slugify(label or agent)
    agent_m, bottle_ms, plan, backend = _resolve(home, agent, list(bottles), environ, prompt, slug)
    if dry_run:
        if on_slug:
            on_slug(slug)
        print(plan_json(backend, plan), file=out)
        return 0
    backend.check()
    with _lock(home, slug):
        if plan.state_dir.exists():
            raise StateConflictError(f"slug {slug!r} is in use by another bottle (destroy it or pick --label)")
        state.write_metadata(home, slug, {
            "slug": slug, "agent": agent, "bottles": [b.name for b in bottle_ms], "label": label,
            "backend": backend.name, "cwd": str(plan.state_dir / "bottle" / "workspace"),
            "started_at": _now(), "frozen_at": None, "state": "creating", "pid": None,
            "session": {"provider": agent_m.provider, "runs": 0}})
    try:
        backend.create(plan, [(b.name, "repo" if b.repo else "dir", b.repo or b.dir) for b in bottle_ms])
        if on_slug:
            on_slug(slug)
        with _lock(home, slug):
            state.update_metadata(home, slug, state="running", session={"provider": agent_m.provider, "runs": 1})
    except BaseException:
        state.remove_state(home, slug)
        raise
    try:
        return _run(home, slug, backend, plan, prompt)
    except BackendError:
        if not state.pid_alive((state.read_metadata(home, slug) or {}).get("pid")):
            state.remove_state(home, slug)   # the agent never started: leave nothing behind
        raise


def resume_headless(home: Path, slug: str, prompt: str, *, environ: dict, on_slug=None) -> int:
    state.check_slug(slug)
    with _lock(home, slug):
        meta = state.read_metadata(home, slug)
        if meta is None:
            raise StateConflictError(f"no bottle with slug {slug!r}")
        if not (plan_dir := state.state_dir(home, slug) / "snapshots" / "latest.tar").exists():
            raise StateConflictError(f"bottle {slug!r} was never frozen (run commit first)")
        if state.pid_alive(meta.get("pid")):
            raise StateConflictError(f"bottle {slug!r} is running")
        _, _, plan, backend = _resolve(home, meta["agent"], meta["bottles"], environ, prompt, slug, resume=True)
        backend.check()
        backend.restore(plan.state_dir)
        session = dict(meta.get("session") or {})
        session["runs"] = session.get("runs", 0) + 1
        state.update_metadata(home, slug, state="running", session=session)
    del plan_dir
    if on_slug:
        on_slug(slug)
    return _run(home, slug, backend, plan, prompt)


def freeze(home: Path, slug: str, *, environ: dict) -> None:
    state.check_slug(slug)
    with _lock(home, slug):
        meta = state.read_metadata(home, slug)
        if meta is None:
            raise StateConflictError(f"no bottle with slug {slug!r}")
        state.update_metadata(home, slug, state="freezing")
        get_backend(meta.get("backend", "bwrap"), environ).freeze(state.state_dir(home, slug), meta.get("pid"))
        state.update_metadata(home, slug, state="frozen", frozen_at=_now(), pid=None)


def destroy(home: Path, slug: str, *, environ: dict) -> bool:
    """Remove the bottle; returns False when there was nothing to remove (still success)."""
    state.check_slug(slug)
    with _lock(home, slug):
        try:
            meta = state.read_metadata(home, slug)
        except StateConflictError:
            meta = None   # corrupt metadata: still remove what is there
        d = state.state_dir(home, slug)
        if meta is None and not d.exists():
            return False
        get_backend((meta or {}).get("backend", "bwrap"), environ).destroy(d, slug, (meta or {}).get("pid"))
        shutil.rmtree(d, ignore_errors=True)
    return True


def list_bottles(home: Path) -> list[dict]:
    rows = []
    for slug in state.list_slugs(home):
        try:
            meta = state.read_metadata(home, slug) or {}
        except StateConflictError:
            rows.append(dict.fromkeys(("agent", "label", "backend", "started_at", "frozen_at"))
                        | {"slug": slug, "state": "corrupt"})
            continue
        st = meta.get("state")
        if st != "frozen":
            st = "running" if state.pid_alive(meta.get("pid")) else "exited"
        rows.append({k: meta.get(k) for k in ("slug", "agent", "label", "backend", "started_at", "frozen_at")}
                    | {"state": st})
    return rows


__all__ = ["start_headless", "resume_headless", "freeze", "destroy", "list_bottles", "UsageError"]
