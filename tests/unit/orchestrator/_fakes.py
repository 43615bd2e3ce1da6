"""Shared test doubles for the orchestrator tests: fakes with state, never mocks (a runner
that returns at once, one that holds like the CLI until frozen or destroyed, one whose start
waits at a gate before its slug); plus helpers that put a real `SqliteRunStore` on a temp
file and seed runs into it."""

from __future__ import annotations

import http.client
import socket
import tempfile
import threading
import unittest
from pathlib import Path

from bot_bottle.orchestrator.model import RunRecord, RunState
from bot_bottle.orchestrator.runner import BottleExit
from bot_bottle.orchestrator.store import SqliteRunStore


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


try:  # the forge layer's fake, once it exists
    from tests.support.fake_forge import FakeForge  # noqa: F401
except ImportError:  # pragma: no cover
    FakeForge = None


class FakeBottleRunner:
    """Records calls; `start`/`resume` return exit code 0 (`start` raises `fail_with` if set);
    `workspaces` records each start's `workspace`; `logs` holds each slug's log text."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.states: dict[str, str] = {}
        self.fail_with: Exception | None = None
        self.workspaces: list[str | None] = []
        self.logs: dict[str, str] = {}

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        self.calls.append(("start", agent, tuple(bottles), label, prompt, dict(env)))
        self.workspaces.append(workspace)
        if self.fail_with is not None:
            raise self.fail_with
        slug = label.lower()
        self.states[slug] = "running"
        on_slug(slug)
        return BottleExit(slug, 0)

    def resume(self, *, slug, prompt, env) -> BottleExit:
        self.calls.append(("resume", slug, prompt, dict(env)))
        self.states[slug] = "running"
        return BottleExit(slug, 0)

    def freeze(self, slug) -> None:
        self.calls.append(("freeze", slug))
        self.states[slug] = "frozen"

    def destroy(self, slug) -> None:
        self.calls.append(("destroy", slug))
        self.states.pop(slug, None)

    def bottle_states(self) -> dict[str, str]:
        return dict(self.states)

    def log_tail(self, slug, lines) -> str:
        return "\n".join(self.logs.get(slug, "").splitlines()[-lines:])


class HoldingBottleRunner(FakeBottleRunner):
    """Like the real CLI: `start`/`resume` block until the bottle is frozen or destroyed
    (`commit` stops its processes), then return exit code 0."""

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[str, threading.Event] = {}
        self._guard = threading.Lock()

    def _release(self, slug: str) -> None:
        with self._guard:
            gate = self._held.pop(slug, None)
        if gate is not None:
            gate.set()

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        super().start(agent=agent, bottles=bottles, label=label, prompt=prompt, env=env,
                      on_slug=lambda slug: None, workspace=workspace)
        slug = label.lower()
        with self._guard:  # held before on_slug so a freeze decided right after releases it
            self._held[slug] = threading.Event()
        on_slug(slug)
        return self._wait(slug)

    def _wait(self, slug: str) -> BottleExit:
        with self._guard:
            gate = self._held.get(slug)
        if gate is not None:
            gate.wait(30)
        return BottleExit(slug, 0)

    def resume(self, *, slug, prompt, env) -> BottleExit:
        with self._guard:
            self._held[slug] = threading.Event()
        super().resume(slug=slug, prompt=prompt, env=env)
        return self._wait(slug)

    def freeze(self, slug) -> None:
        super().freeze(slug)
        self._release(slug)

    def destroy(self, slug) -> None:
        super().destroy(slug)
        self._release(slug)

    def release_all(self) -> None:
        for slug in list(self._held):
            self._release(slug)


class GatedStartRunner(HoldingBottleRunner):
    """A start whose CLI prints its slug only once `slug_gate` is set (`entered` says it is
    waiting there), then holds until frozen or destroyed, like the real CLI."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.slug_gate = threading.Event(), threading.Event()

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        def gated(slug: str) -> None:
            self.entered.set()
            self.slug_gate.wait(10)
            on_slug(slug)
        return super().start(agent=agent, bottles=bottles, label=label, prompt=prompt, env=env,
                             on_slug=gated, workspace=workspace)


def temp_store(test: unittest.TestCase, clock=None) -> SqliteRunStore:
    """A real store on a file in a temp dir, closed and removed when `test` ends."""
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    store = SqliteRunStore(Path(tmp.name) / "orchestrator.db", clock=clock)
    test.addCleanup(store.close)
    return store


# the legal path from a new (queued) run to each state
_PATH = {
    RunState.QUEUED: (),
    RunState.STARTING: (RunState.STARTING,),
    RunState.RUNNING: (RunState.STARTING, RunState.RUNNING),
    RunState.FROZEN: (RunState.STARTING, RunState.RUNNING, RunState.FROZEN),
    RunState.RESUMING: (RunState.STARTING, RunState.RUNNING, RunState.FROZEN, RunState.RESUMING),
    RunState.TIMED_OUT: (RunState.STARTING, RunState.RUNNING, RunState.TIMED_OUT),
    RunState.FAILED: (RunState.STARTING, RunState.FAILED),
    RunState.DESTROYED: (RunState.DESTROYED,),
}


def seed_run(store: SqliteRunStore, issue: int, state: RunState, *, now: float = 0.0,
             owner: str = "acme", repo: str = "widgets", agent: str = "claude",
             run_token: str | None = None, run_id: int | None = None, **fields) -> RunRecord:
    """Create a run for `issue` and walk it through legal transitions to `state`, all at
    `now` (so `updated_at == now`), then set `fields`. With `run_id`, destroyed runs of
    another repository fill the ids before it, so the run gets exactly that id."""
    if run_id is not None:
        while True:
            existing = store.list_runs(include_destroyed=True)
            next_id = existing[-1].id + 1 if existing else 1
            if next_id >= run_id:
                break
            seed_run(store, next_id, RunState.DESTROYED, owner="padding", repo="padding")
    run = store.create_run(owner, repo, issue, agent, (), RunState.QUEUED,
                           run_token or f"tok-{owner}-{repo}-{issue}", now)
    for step in _PATH[state]:
        run = store.transition(run.id, step, now=now, reason="seed")
    if fields:
        run = store.update_run(run.id, now=now, **fields)
    if run_id is not None and run.id != run_id:
        raise AssertionError(f"run {run_id} already taken (got {run.id})")
    return run


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the sidecar's transport)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)
