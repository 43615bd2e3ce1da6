"""The store's values and row mapping: its errors, the frozen records it returns and how a
`runs` row becomes a `RunRecord`. (`status` reads the file through `run_listing`.)"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Iterable

from bot_bottle.orchestrator.model import OrchestratorError, RunRecord, RunState


class StoreError(OrchestratorError):
    """The store could not read or write (wraps the sqlite3 error as `__cause__`)."""


class RunNotFound(StoreError):
    pass


class LiveRunExists(StoreError):
    """The issue already has a run that is not destroyed."""


@dataclass(frozen=True)
class StoredDelivery:
    seq: int
    delivery_id: str | None
    event_type: str
    body: bytes
    received_at: float


@dataclass(frozen=True)
class DoneEvent:
    id: int
    source: str
    run_id: int
    status: str
    summary: str
    at: float


@dataclass(frozen=True)
class OpLogEntry:
    id: int
    run_id: int
    at: float
    kind: str
    detail: dict


@dataclass(frozen=True)
class OutboxItem:
    id: int
    run_id: int | None
    owner: str
    repo: str
    number: int
    body: str
    attempts: int
    # a POST was started and its outcome is unknown (timeout, crash): check before reposting
    posting: bool = False


# the model's field order, so rows build RunRecords positionally (a new field needs a migration)
_RUN_COLS = tuple(f.name for f in dataclasses.fields(RunRecord))
RUN_SELECT = f"SELECT {', '.join(_RUN_COLS)} FROM runs"
MUTABLE_RUN_FIELDS = frozenset({"agent", "bottles", "slug", "pr_number", "last_progress_at",
                                 "last_done_status", "last_done_summary", "pending_prompt",
                                 "error", "launch_prompt"})
SLOT_STATES = tuple(s.value for s in RunState if s.has_process)


_STATES = {s.value: s for s in RunState}
_BOTTLES_AT, _STATE_AT = _RUN_COLS.index("bottles"), _RUN_COLS.index("state")


@functools.lru_cache(maxsize=256)
def _bottles(text: str) -> tuple[str, ...]:
    # `status` decodes up to 100k rows that share a handful of bottle lists
    return tuple(json.loads(text))


def run_from_row(row: Iterable) -> RunRecord:
    values = list(row)
    values[_BOTTLES_AT] = _bottles(values[_BOTTLES_AT])
    values[_STATE_AT] = _STATES[values[_STATE_AT]]
    return RunRecord(*values)


def list_runs_query(include_destroyed: bool, states: Iterable[RunState] | None,
                     limit: int | None) -> tuple[str, list] | None:
    """None when `states` is empty (nothing can match)."""
    sql, params = RUN_SELECT, []
    if states is not None:
        params = [RunState(s).value for s in states]
        if not params:
            return None
        sql += f" WHERE state IN ({', '.join('?' * len(params))})"
    elif not include_destroyed:
        sql += " WHERE state != 'destroyed'"
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params
