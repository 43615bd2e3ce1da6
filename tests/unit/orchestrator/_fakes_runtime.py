"""Runtime fakes for the lifecycle/sidecar/relay tests (stateful, no mocks): a run store
holding the §3 subset those pieces use, until the real `SqliteRunStore` exists, and a
`FakeBottleRunner` recording what it was asked to do."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bot_bottle.orchestrator.model import RunRecord, RunState, check_transition
from bot_bottle.orchestrator.runner import BottleExit


@dataclass(frozen=True)
class FakeOp:
    run_id: int
    kind: str
    detail: dict
    at: float


@dataclass
class FakeOutboxItem:
    id: int
    run_id: int
    owner: str
    repo: str
    number: int
    body: str
    next_attempt_at: float
    sent: bool = False


class FakeRunStore:
    def __init__(self) -> None:
        self.runs: dict[int, RunRecord] = {}
        self.ops: list[FakeOp] = []
        self.done_events: dict[str, tuple[int, str, str]] = {}
        self.cursors: dict[str, str] = {}
        self.outbox: list[FakeOutboxItem] = []
        self._lock = threading.Lock()

    def create_run(self, owner, repo, issue_number, agent, bottles, state, run_token, now) -> RunRecord:
        run = RunRecord(id=len(self.runs) + 1, owner=owner, repo=repo, issue_number=issue_number,
                        agent=agent, bottles=tuple(bottles), state=state, created_at=now,
                        updated_at=now, run_token=run_token)
        return self.add_run(run)

    def transition(self, run_id: int, new_state: RunState, *, now: float, reason: str, **fields) -> RunRecord:
        check_transition(self.runs[run_id].state, new_state)
        self.append_op(run_id, "transition", {"to": new_state.value, "reason": reason}, now)
        return self.update_run(run_id, now=now, state=new_state, **fields)

    def enqueue_comment(self, run_id, owner, repo, number, body, now) -> int:
        self.outbox.append(FakeOutboxItem(len(self.outbox) + 1, run_id, owner, repo, number, body, now))
        return len(self.outbox)

    def due_outbox(self, now: float) -> list:
        return [i for i in self.outbox if not i.sent and i.next_attempt_at <= now]

    def mark_outbox_sent(self, item_id: int, now: float) -> None:
        self.outbox[item_id - 1].sent = True

    def mark_outbox_retry(self, item_id: int, next_attempt_at: float, error: str) -> None:
        self.outbox[item_id - 1].next_attempt_at = next_attempt_at

    def add_run(self, run: RunRecord) -> RunRecord:
        self.runs[run.id] = run
        return run

    def get_run(self, run_id: int) -> RunRecord | None:
        return self.runs.get(run_id)

    def list_runs(self, include_destroyed: bool = False, states=None) -> list[RunRecord]:
        runs = sorted(self.runs.values(), key=lambda r: r.id)
        if states is not None:
            return [r for r in runs if r.state in states]
        return [r for r in runs if include_destroyed or r.state is not RunState.DESTROYED]

    def get_run_by_token(self, token: str) -> RunRecord | None:
        return next((r for r in self.runs.values()
                     if r.run_token == token and r.state is not RunState.DESTROYED), None)

    def update_run(self, run_id: int, *, now: float, **fields) -> RunRecord:
        with self._lock:
            run = self.runs[run_id].with_changes(updated_at=now, **fields)
            self.runs[run_id] = run
            return run

    def append_op(self, run_id: int, kind: str, detail: dict, now: float) -> None:
        self.ops.append(FakeOp(run_id, kind, dict(detail), now))

    def record_done_event(self, source, run_id, status, summary, now, cursor_name, cursor_value) -> bool:
        with self._lock:
            if source in self.done_events:
                return False
            self.done_events[source] = (run_id, status, summary)
            self.cursors[cursor_name] = cursor_value
            return True

    def relay_cursor(self, name: str) -> str:
        return self.cursors.get(name, "")


class FakeBottleRunner:
    """Records calls; `start`/`resume` return the exit code set in `exit_codes` (default 0)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.states: dict[str, str] = {}
        self.fail_with: Exception | None = None

    def start(self, *, agent, bottles, label, prompt, env, on_slug) -> BottleExit:
        self.calls.append(("start", agent, tuple(bottles), label, prompt, dict(env)))
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
