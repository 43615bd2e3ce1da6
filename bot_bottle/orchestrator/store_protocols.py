"""What the store offers, by role: the type hints its collaborators take (a module that only
reads runs asks for a `RunStore`, the relay for a `DoneEventStore`), so each names what it
uses and a test may hand it anything shaped the same. `SqliteRunStore` is all of them
(`OrchestratorStore`). Signatures here are the store's public ones; the behaviour is
documented where it is implemented (`store_runs`, `store_oplog`, `store_deliveries`,
`store_queues`, `store_db`).
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterable, Protocol, TypeVar

from bot_bottle.orchestrator.model import RunRecord, RunState
from bot_bottle.orchestrator.store_rows import DoneEvent, OpLogEntry, OutboxItem, StoredDelivery

T = TypeVar("T")


class RunStore(Protocol):
    """Runs, their transitions and their op-log."""

    def create_run(self, owner: str, repo: str, issue_number: int, agent: str,
                   bottles: Iterable[str], state: RunState, run_token: str,
                   now: float, *, launch_prompt: str | None = None) -> RunRecord: ...

    def transition(self, run_id: int, new_state: RunState, *, now: float, reason: str,
                   **fields) -> RunRecord: ...

    def update_run(self, run_id: int, *, now: float, **fields) -> RunRecord: ...

    def append_op(self, run_id: int, kind: str, detail: dict, now: float, *,
                  progress: bool = False, essential: bool = False) -> bool: ...

    def op_log(self, run_id: int) -> list[OpLogEntry]: ...

    def get_run(self, run_id: int) -> RunRecord | None: ...

    def get_run_by_token(self, token: str) -> RunRecord | None: ...

    def live_run_for_issue(self, owner: str, repo: str,
                           issue_number: int) -> RunRecord | None: ...

    def run_for_pr(self, owner: str, repo: str, pr_number: int) -> RunRecord | None: ...

    def latest_run_for_issue(self, owner: str, repo: str,
                             issue_number: int) -> RunRecord | None: ...

    def list_runs(self, include_destroyed: bool = False,
                  states: Iterable[RunState] | None = None,
                  limit: int | None = None) -> list[RunRecord]: ...

    def count_runs_by_state(self) -> dict[str, int]: ...

    def oldest_queued_run(self) -> RunRecord | None: ...

    def slot_holders(self) -> int: ...

    def add_run_listener(self, listener: Callable[[RunRecord], None]) -> None: ...

    def add_transition_listener(self,
                                listener: Callable[[RunRecord, RunState], None]) -> None: ...


class DeliveryStore(Protocol):
    """Webhook deliveries: recorded durably by the receiver, processed by the dispatcher."""

    def record_delivery(self, delivery_id: str | None, event_type: str, body: bytes,
                        received_at: float, comment_key: str | None = None) -> bool: ...

    def record_delivery_async(self, delivery_id: str | None, event_type: str, body: bytes,
                              received_at: float, comment_key: str | None = None, *,
                              callback: Callable[[bool | None, BaseException | None], None]
                              ) -> None: ...

    def pending_deliveries(self, limit: int, after: int = 0) -> list[StoredDelivery]: ...

    def mark_delivery_processed(self, seq: int, outcome: str) -> None: ...

    def mark_deliveries_processed(self, outcomes: Iterable[tuple[int, str]], *,
                                  lazily: bool = False) -> None: ...

    def delivery_counts(self) -> dict[str, int]: ...

    def pending_delivery_count(self) -> int: ...

    def prune_deliveries(self) -> int: ...


class DoneEventStore(Protocol):
    """Done signals relayed from the sidecar's queue directory, with the relay's cursor."""

    def record_done_event(self, source: str, run_id: int, status: str, summary: str,
                          now: float, cursor_name: str, cursor_value: str) -> bool: ...

    def pending_done_events(self, run_id: int | None = None) -> list[DoneEvent]: ...

    def done_event_pending(self, event_id: int) -> bool: ...

    def mark_done_processed(self, event_id: int) -> None: ...

    def relay_cursor(self, name: str) -> str: ...


class OutboxStore(Protocol):
    """Comments that must reach the forge, kept until they do."""

    def enqueue_comment(self, run_id: int | None, owner: str, repo: str, number: int,
                        body: str, now: float) -> int: ...

    def due_outbox(self, now: float) -> list[OutboxItem]: ...

    def mark_outbox_posting(self, item_id: int, now: float) -> None: ...

    def mark_outbox_sent(self, item_id: int, now: float) -> None: ...

    def mark_outbox_retry(self, item_id: int, next_attempt_at: float, error: str) -> None: ...

    def mark_outbox_dropped(self, item_id: int, now: float, error: str) -> None: ...

    def outbox_pending_count(self) -> int: ...


class StoreFile(Protocol):
    """The file itself: health, one-query views, other layers' connection, closing."""

    def ping(self) -> bool: ...

    def with_reader(self, read: Callable[[sqlite3.Connection], T]) -> T: ...

    def side_connection(self) -> sqlite3.Connection: ...

    def close(self) -> None: ...


class OrchestratorStore(RunStore, DeliveryStore, DoneEventStore, OutboxStore, StoreFile,
                        Protocol):
    """Everything: for the composition root and the parts that touch every role."""
