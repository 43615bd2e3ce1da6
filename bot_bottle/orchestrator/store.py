"""The orchestrator's durable state in one SQLite file (`FORGE_DB_PATH`): webhook deliveries,
runs, the op-log, relayed done events and their cursor, and the comment outbox. Other
layers' tables in the same file (the forge layer's `forge_state`) are created through
`schema_hooks` and reached through `side_connection()`: the composition root wires them, so
this module never imports the forge layer.

`SqliteRunStore` is composed of parts that each own one table group and get the shared
connections (`store_db.StoreDb`) passed in: `store_runs` (runs and transitions),
`store_oplog` (the op-log and its size and rate bounds), `store_deliveries` (deliveries,
recorded and marked through `store_writer`'s group commit, pruned after their retention) and
`store_queues` (done events, outbox); `store_wal` checkpoints the WAL off the commit path.
It offers their methods under the names callers use; `store_protocols` names them by role
for type hints. Every sqlite3 failure (read-only file, disk full, lock timeout) surfaces as
`StoreError`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from bot_bottle.orchestrator.store_db import WAL_MAX_FRAMES, StoreDb
from bot_bottle.orchestrator.store_deliveries import DEFAULT_RETENTION, Deliveries
from bot_bottle.orchestrator.store_oplog import OpLog
from bot_bottle.orchestrator.store_queues import DoneEvents, Outbox
from bot_bottle.orchestrator.store_rows import (  # noqa: F401 (the store's public values)
    MUTABLE_RUN_FIELDS, RUN_SELECT, SLOT_STATES, DoneEvent, LiveRunExists, OpLogEntry, OutboxItem,
    RunNotFound, StoredDelivery, StoreError, list_runs_query, run_from_row)
from bot_bottle.orchestrator.store_runs import Runs

T = TypeVar("T")


class SqliteRunStore:
    """An `store_protocols.OrchestratorStore` on one SQLite file."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] | None = None,
                 busy_timeout: float = 5.0, max_pages: int | None = None,
                 schema_hooks: Iterable[Callable[[sqlite3.Connection], None]] = (),
                 delivery_retention: float | None = DEFAULT_RETENTION,
                 wal_max_frames: int = WAL_MAX_FRAMES) -> None:
        """`path` is a file path, a `file:` URI (e.g. `?mode=ro`), or `:memory:` (one thread
        only: everything then shares the writer connection). `max_pages` caps the file size
        (`PRAGMA max_page_count`); past it writes fail with `StoreError`. `schema_hooks`
        create other layers' tables (idempotently) on every open. `delivery_retention` is
        the seconds a processed delivery is kept (None: for ever); `wal_max_frames` bounds
        the WAL, in pages (`store_wal`)."""
        db = self._db = StoreDb(path, clock=clock or time.time, busy_timeout=busy_timeout,
                                max_pages=max_pages, schema_hooks=schema_hooks,
                                wal_max_frames=wal_max_frames)
        self.schema_version = db.schema_version
        runs = Runs(db, OpLog(db))
        try:
            deliveries = self._deliveries = Deliveries(db, delivery_retention)
        except BaseException:
            db.close()
            raise
        done, outbox = DoneEvents(db), Outbox(db)
        # each part's methods under the store's names (store_protocols: one role per part)
        # RunStore
        self.create_run = runs.create_run
        self.transition = runs.transition
        self.update_run = runs.update_run
        self.append_op = runs.append_op
        self.op_log = runs.op_log
        self.get_run = runs.get_run
        self.get_run_by_token = runs.get_run_by_token
        self.live_run_for_issue = runs.live_run_for_issue
        self.run_for_pr = runs.run_for_pr
        self.latest_run_for_issue = runs.latest_run_for_issue
        self.list_runs = runs.list_runs
        self.count_runs_by_state = runs.count_runs_by_state
        self.oldest_queued_run = runs.oldest_queued_run
        self.slot_holders = runs.slot_holders
        self.add_run_listener = runs.add_run_listener
        self.add_transition_listener = runs.add_transition_listener
        # DeliveryStore
        self.record_delivery = deliveries.record_delivery
        self.record_delivery_async = deliveries.record_delivery_async
        self.pending_deliveries = deliveries.pending_deliveries
        self.mark_delivery_processed = deliveries.mark_delivery_processed
        self.mark_deliveries_processed = deliveries.mark_deliveries_processed
        self.delivery_counts = deliveries.delivery_counts
        self.pending_delivery_count = deliveries.pending_delivery_count
        self.prune_deliveries = deliveries.prune_deliveries
        # DoneEventStore
        self.record_done_event = done.record_done_event
        self.pending_done_events = done.pending_done_events
        self.done_event_pending = done.done_event_pending
        self.mark_done_processed = done.mark_done_processed
        self.relay_cursor = done.relay_cursor
        # OutboxStore
        self.enqueue_comment = outbox.enqueue_comment
        self.due_outbox = outbox.due_outbox
        self.mark_outbox_posting = outbox.mark_outbox_posting
        self.mark_outbox_sent = outbox.mark_outbox_sent
        self.mark_outbox_retry = outbox.mark_outbox_retry
        self.mark_outbox_dropped = outbox.mark_outbox_dropped
        self.outbox_pending_count = outbox.outbox_pending_count

    # ---- StoreFile -----------------------------------------------------------------------

    @property
    def commit_count(self) -> int:
        """Writer commits; lets tests see that deliveries are batched."""
        return self._db.commit_count

    def side_connection(self) -> sqlite3.Connection:
        """A connection to the same file for another layer's own store (e.g. forge state),
        apart from the writer so its transactions never interleave with ours."""
        return self._db.side_conn

    def with_reader(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read(conn)` on this thread's reader connection (the writer's, under its lock, for
        `:memory:`); for the one-query views in `run_listing`. sqlite3 errors are StoreError."""
        return self._db.read(read)

    def ping(self) -> bool:
        """True when the DB answers a query; never raises (for /healthz)."""
        try:
            return self._db.rows("SELECT 1")[0][0] == 1
        except Exception:
            return False

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close every connection. Idempotent."""
        self._deliveries.close()
        self._db.close()

    def __enter__(self) -> "SqliteRunStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
