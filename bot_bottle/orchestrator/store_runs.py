"""Runs in the store: creating one (one live run per issue), the lookups the service needs,
transitions checked against the model's table and logged in the same transaction, field
updates, and the listeners that see every committed change. Works through the shared
`StoreDb` and the `OpLog` it is given."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Callable, Iterable

from bot_bottle.orchestrator.model import RunRecord, RunState, check_transition
from bot_bottle.orchestrator.store_db import StoreDb
from bot_bottle.orchestrator.store_oplog import OpLog
from bot_bottle.orchestrator.store_rows import (
    MUTABLE_RUN_FIELDS, RUN_SELECT, SLOT_STATES, LiveRunExists, OpLogEntry, RunNotFound,
    list_runs_query, run_from_row)

log = logging.getLogger("bot_bottle.orchestrator.store")


class Runs:
    def __init__(self, db: StoreDb, oplog: OpLog) -> None:
        self._db = db
        self._oplog = oplog
        self._run_listeners: list[Callable[[RunRecord], None]] = []
        self._transition_listeners: list[Callable[[RunRecord, RunState], None]] = []

    def add_run_listener(self, listener: Callable[[RunRecord], None]) -> None:
        """`listener(run)` after every committed change of a run (the composition root mirrors
        runs into the forge layer's `forge_state`); a failing listener is logged, never raised."""
        self._run_listeners.append(listener)

    def add_transition_listener(self, listener: Callable[[RunRecord, RunState], None]) -> None:
        """`listener(run, old_state)` after every committed transition (`/metrics` observes
        run durations); a failing listener is logged, never raised."""
        self._transition_listeners.append(listener)

    def _changed(self, run: RunRecord) -> RunRecord:
        for listener in self._run_listeners:
            try:
                listener(run)
            except Exception:  # a mirror must not undo or block the change it mirrors
                log.exception("run listener failed for run %s", run.id)
        return run

    def _one(self, sql: str, params: Iterable = ()) -> RunRecord | None:
        rows = self._db.rows(sql, params)
        return run_from_row(rows[0]) if rows else None

    # ---- writes --------------------------------------------------------------------------

    def create_run(self, owner: str, repo: str, issue_number: int, agent: str,
                   bottles: Iterable[str], state: RunState, run_token: str,
                   now: float, *, launch_prompt: str | None = None) -> RunRecord:
        """`launch_prompt` is written in the same transaction: a launch is never recorded
        without what it needs to be made again."""
        state, bottles = RunState(state), list(bottles)
        if not run_token:
            raise ValueError("a run needs a run token")
        with self._db.atomic() as conn:
            live = conn.execute("SELECT id FROM runs WHERE owner = ? AND repo = ? AND "
                                "issue_number = ? AND state != 'destroyed'",
                                (owner, repo, issue_number)).fetchall()
            if live:
                raise LiveRunExists(f"{owner}/{repo}#{issue_number} already has live run "
                                    f"{live[0]['id']}")
            run_id = conn.execute(
                "INSERT INTO runs (owner, repo, issue_number, agent, bottles, state, created_at, "
                "updated_at, run_token, launch_prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (owner, repo, issue_number, agent, json.dumps(bottles), state.value, now,
                 now, run_token, launch_prompt)).lastrowid
            self._oplog.write(conn, run_id, "created", {"state": state.value, "agent": agent,
                                                        "bottles": bottles}, now)
            run = self._run_in(conn, run_id)
        return self._changed(run)

    def transition(self, run_id: int, new_state: RunState, *, now: float, reason: str,
                   **fields) -> RunRecord:
        """Move the run to `new_state` (checked against the transition table) and set
        `fields`, with the op-log row in the same transaction."""
        new_state = RunState(new_state)
        values = self._checked_fields(fields)
        with self._db.atomic() as conn:
            old = self._run_in(conn, run_id)
            check_transition(old.state, new_state)
            self._set(conn, run_id, now, {**values, "state": new_state.value})
            self._oplog.write(conn, run_id, "transition", {
                "from": old.state.value, "to": new_state.value, "reason": reason}, now)
            run = self._run_in(conn, run_id)
        for listener in self._transition_listeners:
            try:
                listener(run, old.state)
            except Exception:  # a measurement must not undo or block the change
                log.exception("transition listener failed for run %s", run_id)
        return self._changed(run)

    def update_run(self, run_id: int, *, now: float, **fields) -> RunRecord:
        """Set non-state fields; states change only through `transition`."""
        values = self._checked_fields(fields)
        with self._db.atomic() as conn:
            self._run_in(conn, run_id)
            self._set(conn, run_id, now, values)
            run = self._run_in(conn, run_id)
        return self._changed(run)

    def append_op(self, run_id: int, kind: str, detail: dict, now: float, *,
                  progress: bool = False, essential: bool = False) -> bool:
        """Log an entry for the run (bounded: see `store_oplog`); False if it was over the
        run's rate and dropped. `progress`: the entry is the agent's activity, so the run's
        `last_progress_at` moves to `now` in the same transaction — only if it was stored.
        `essential` entries (the service reads them back) are never dropped."""
        def mark(conn: sqlite3.Connection) -> None:
            self._set(conn, run_id, now, {"last_progress_at": now})

        stored = self._oplog.append(run_id, kind, detail, now, essential=essential,
                                    on_stored=mark if progress else None)
        if stored and progress:
            run = self.get_run(run_id)
            if run is not None:
                self._changed(run)
        return stored

    def op_log(self, run_id: int) -> list[OpLogEntry]:
        return self._oplog.entries(run_id)

    @staticmethod
    def _checked_fields(fields: dict) -> dict:
        unknown = set(fields) - MUTABLE_RUN_FIELDS
        if unknown:
            raise ValueError(f"cannot set run fields {sorted(unknown)} here")
        if "bottles" in fields:
            fields = {**fields, "bottles": json.dumps(list(fields["bottles"]))}
        return fields

    @staticmethod
    def _set(conn: sqlite3.Connection, run_id: int, now: float, values: dict) -> None:
        values = {**values, "updated_at": now}
        # column names come from MUTABLE_RUN_FIELDS (checked above), never from callers' data
        cur = conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in values)} "
                           "WHERE id = ?", (*values.values(), run_id))
        if cur.rowcount == 0:
            raise RunNotFound(f"no run {run_id}")

    @staticmethod
    def _run_in(conn: sqlite3.Connection, run_id: int) -> RunRecord:
        rows = conn.execute(f"{RUN_SELECT} WHERE id = ?", (run_id,)).fetchall()
        if not rows:
            raise RunNotFound(f"no run {run_id}")
        return run_from_row(rows[0])

    # ---- reads ---------------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord | None:
        return self._one(f"{RUN_SELECT} WHERE id = ?", (run_id,))

    def get_run_by_token(self, token: str) -> RunRecord | None:
        """Only a live run answers to its token: a destroyed run's bottle has no business."""
        if not token:
            return None
        return self._one(f"{RUN_SELECT} WHERE run_token = ? AND state != 'destroyed'", (token,))

    def live_run_for_issue(self, owner: str, repo: str, issue_number: int) -> RunRecord | None:
        return self._one(f"{RUN_SELECT} WHERE owner = ? AND repo = ? AND issue_number = ? "
                         "AND state != 'destroyed'", (owner, repo, issue_number))

    def run_for_pr(self, owner: str, repo: str, pr_number: int) -> RunRecord | None:
        """The run that opened the PR: a live one if any, else the latest."""
        return self._one(f"{RUN_SELECT} WHERE owner = ? AND repo = ? AND pr_number = ? "
                         "ORDER BY state = 'destroyed', id DESC LIMIT 1",
                         (owner, repo, pr_number))

    def latest_run_for_issue(self, owner: str, repo: str, issue_number: int) -> RunRecord | None:
        """The issue's newest run in any state (one run per issue, ever, counts destroyed ones)."""
        return self._one(f"{RUN_SELECT} WHERE owner = ? AND repo = ? AND issue_number = ? "
                         "ORDER BY id DESC LIMIT 1", (owner, repo, issue_number))

    def list_runs(self, include_destroyed: bool = False, states: Iterable[RunState] | None = None,
                  limit: int | None = None) -> list[RunRecord]:
        """Runs in id order; `states`, when given, overrides `include_destroyed`."""
        query = list_runs_query(include_destroyed, states, limit)
        return [] if query is None else [run_from_row(r) for r in self._db.rows(*query)]

    def count_runs_by_state(self) -> dict[str, int]:
        counts = {s.value: 0 for s in RunState}
        for r in self._db.rows("SELECT state, COUNT(*) AS n FROM runs GROUP BY state"):
            counts[r["state"]] = r["n"]
        return counts

    def oldest_queued_run(self) -> RunRecord | None:
        return self._one(f"{RUN_SELECT} WHERE state = 'queued' ORDER BY id LIMIT 1")

    def slot_holders(self) -> int:
        """Runs that hold a running slot (a bottle process may be up)."""
        return self._db.rows(f"SELECT COUNT(*) FROM runs WHERE state IN "
                             f"({', '.join('?' * len(SLOT_STATES))})", SLOT_STATES)[0][0]
