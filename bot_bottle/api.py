"""The core operations shared by the CLI and Python callers: start, resume, freeze, destroy,
list, logs.

Callers pass `home` (the $BOT_BOTTLE_HOME path) and `environ` (the caller's environment);
nothing here reads os.environ. Errors are BottleError subclasses carrying the exit code.
Resolving manifests into a plan lives in `resolve`, one run of the agent in `agent_run`, the
agent log in `agent_log`.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import agent_log, state
from .agent_run import TIMEOUT_EXIT, lock as _lock, log_cap, now as _now, run_agent
from .backend import get_backend
from .backend.fill import check_workspace
from .errors import BackendError, StateConflictError, UsageError
from .manifest import validate_name
from .resolve import SAFE_ENV, check_program, resolve, safe_names
from .trees import remove_tree

# the per-run fields `list --json` adds to each row (see docs/core.md)
RUN_FIELDS = ("run_started_at", "ended_at", "exit_code", "timed_out")
ROW_FIELDS = ("slug", "agent", "label", "backend", "started_at", "frozen_at", *RUN_FIELDS)


def plan_json(backend, plan) -> str:
    """The resolved plan as JSON; values of env vars that may be secrets are redacted."""
    safe = safe_names(plan)
    environment = {k: v if k in safe else "<redacted>" for k, v in sorted(plan.env.items())}
    return json.dumps({"slug": plan.slug, "backend": backend.name, "argv": backend.command(plan),
                       "mounts": backend.mounts(plan), "env": sorted(plan.env),
                       "environment": environment, "timeout": plan.timeout, "network": plan.network,
                       "egress": plan.egress.public() if plan.egress else None}, indent=2)


def start_headless(home: Path, agent: str, prompt: str | bytes, *, environ: dict, bottles=(),
                   label=None, workspace=None, dry_run=False, on_slug=None, out=None,
                   notify=None) -> int:
    """Create a bottle and run the agent in it; returns the agent's exit code (124 on timeout,
    after `notify(message)`). `workspace`: a directory that becomes the bottle's /workspace."""
    validate_name("agent", agent)
    slug = state.slugify(label or agent)
    agent_m, bottle_ms, plan, backend = resolve(home, agent, list(bottles), environ, slug)
    names = [b.name for b in bottle_ms if b.repo or b.dir]
    ws = check_workspace(workspace, home, names) if workspace is not None else None
    cap = log_cap(environ)
    if dry_run:
        if on_slug:
            on_slug(slug)
        print(plan_json(backend, plan), file=out)
        return 0
    backend.check()
    check_program(backend, plan)
    with _lock(home, slug):
        if plan.state_dir.exists():
            raise StateConflictError(f"slug {slug!r} is in use by another bottle (destroy it or pick --label)")
        state.write_metadata(home, slug, {
            "slug": slug, "agent": agent, "bottles": [b.name for b in bottle_ms], "label": label,
            "backend": backend.name, "cwd": str(plan.state_dir / "bottle" / "workspace"),
            "started_at": _now(), "frozen_at": None, "state": "creating", "pid": None,
            "session": {"provider": agent_m.provider, "runs": 0}})
    try:
        backend.create(plan, [(b.name, "repo" if b.repo else "dir", b.repo or b.dir)
                              for b in bottle_ms if b.repo or b.dir], ws)
        if on_slug:
            on_slug(slug)
        with _lock(home, slug):   # a commit or destroy may have got in since the slug line
            meta = state.read_metadata(home, slug)
            if meta is None:
                raise StateConflictError(f"bottle {slug!r} was destroyed before its agent started")
            if meta.get("state") == "creating":
                meta["state"] = "running"
            meta["session"] = {"provider": agent_m.provider, "runs": 1}
            state.write_metadata(home, slug, meta)
    except BaseException:
        state.remove_state(home, slug)
        raise
    try:
        return run_agent(home, slug, backend, plan, prompt, kind="start", run=1, cap=cap, notify=notify)
    except BackendError:
        if not state.pid_alive((state.read_metadata(home, slug) or {}).get("pid")):
            state.remove_state(home, slug)   # the agent never started: leave nothing behind
        raise


def resume_headless(home: Path, slug: str, prompt: str | bytes, *, environ: dict, on_slug=None,
                    notify=None) -> int:
    """Restore the bottle's last state and run the agent's resume argv. A bottle that ran
    after its last freeze is snapshotted first, so resume never goes back to older work."""
    state.check_slug(slug)
    cap = log_cap(environ)
    with _lock(home, slug):
        meta = state.read_metadata(home, slug)
        if meta is None:
            raise StateConflictError(f"no bottle with slug {slug!r}")
        if not (state.state_dir(home, slug) / "snapshots" / "latest.tar").exists():
            raise StateConflictError(f"bottle {slug!r} was never frozen (run commit first)")
        if state.pid_alive(meta.get("pid")):
            raise StateConflictError(f"bottle {slug!r} is running")
        _, _, plan, backend = resolve(home, meta["agent"], meta["bottles"], environ, slug, resume=True)
        backend.check()
        if meta.get("state") != "frozen":
            backend.freeze(plan.state_dir, None)
            state.update_metadata(home, slug, state="frozen", frozen_at=_now())
        backend.restore(plan.state_dir)
        session = dict(meta.get("session") or {})
        session["runs"] = session.get("runs", 0) + 1
        state.update_metadata(home, slug, state="running", session=session)
    if on_slug:
        on_slug(slug)
    return run_agent(home, slug, backend, plan, prompt, kind="resume", run=session["runs"], cap=cap,
                     notify=notify)


def freeze(home: Path, slug: str, *, environ: dict) -> None:
    state.check_slug(slug)
    with _lock(home, slug):
        meta = state.read_metadata(home, slug)
        if meta is None:
            raise StateConflictError(f"no bottle with slug {slug!r}")
        state.update_metadata(home, slug, state="freezing")
        try:
            get_backend(meta.get("backend", "bwrap"), environ).freeze(state.state_dir(home, slug),
                                                                      meta.get("pid"))
        except BaseException:
            # the snapshot was not taken (the previous one is kept): not frozen, and a resume
            # must take a new one first; the bottle's processes may already be stopped
            pid = meta.get("pid")
            alive = state.pid_alive(pid)
            try:
                state.update_metadata(home, slug, state="running" if alive else "exited",
                                      pid=pid if alive else None)
            except OSError:
                pass   # a full disk: the freeze's own error is the one to report
            raise
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
        remove_tree(d, "the bottle's state")
    return True


def list_bottles(home: Path) -> list[dict]:
    rows = []
    for slug in state.list_slugs(home):
        try:
            meta = state.read_metadata(home, slug) or {}
        except StateConflictError:
            rows.append(dict.fromkeys(ROW_FIELDS) | {"slug": slug, "state": "corrupt"})
            continue
        st = meta.get("state")
        if st != "frozen":
            st = "running" if state.pid_alive(meta.get("pid")) else "exited"
        rows.append({k: meta.get(k) for k in ROW_FIELDS} | {"state": st})
    return rows


def logs(home: Path, slug: str, out, *, tail: int | None = None) -> None:
    """Write the bottle's agent log (or its last `tail` lines) to the binary stream `out`."""
    state.check_slug(slug)
    if tail is not None and tail < 0:
        raise UsageError(f"--tail must be >= 0, got {tail}")
    if not (state.state_dir(home, slug) / "metadata.json").exists():
        raise StateConflictError(f"no bottle with slug {slug!r}")
    agent_log.copy_log(state.state_dir(home, slug), out, tail)


__all__ = ["start_headless", "resume_headless", "freeze", "destroy", "list_bottles", "logs",
           "plan_json", "SAFE_ENV", "TIMEOUT_EXIT", "UsageError"]
