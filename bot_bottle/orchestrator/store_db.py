"""The store's connections to its one SQLite file, shared by the store's parts (runs, op-log,
deliveries, queues), which each get this object passed in: one writer connection guarded
by a lock (`atomic`), one reader connection per thread (`rows`, `read`; WAL lets them run
beside the writer) and a side connection for other layers' tables. No commit checkpoints
the WAL: `store_wal` does, off the commit path. Every sqlite3 failure (read-only file, disk
full, lock timeout) surfaces as `StoreError`. The schema and its migrations are
`store_schema`'s.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from bot_bottle.orchestrator import store_schema
from bot_bottle.orchestrator.store_wal import Checkpointer
from bot_bottle.orchestrator.store_rows import StoreError

log = logging.getLogger("bot_bottle.orchestrator.store")
T = TypeVar("T")

# The WAL is started over once it holds this many pages (4 KiB each: 16 MiB), and cut back
# to this size when it is (see `store_wal`).
WAL_MAX_FRAMES = 4096


class _Reader:
    """Holds a thread's reader connection; when the thread ends the holder is dropped with
    its thread-local and the finalizer closes the connection (request threads come and go)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.close = weakref.finalize(self, conn.close)


def _create_private(path: Path) -> None:
    """Create the DB file 0600 before SQLite does (it would make it 0644): SQLite gives the
    -wal and -shm files the database's own mode, so all three stay private, whatever the
    umask. An existing file is left as it is (the service narrows it at start, with a log)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        return
    os.chmod(path, 0o600)  # O_CREAT's mode went through the umask (only ever narrower)


class StoreDb:
    def __init__(self, path: str | Path, *, clock: Callable[[], float], busy_timeout: float,
                 max_pages: int | None,
                 schema_hooks: Iterable[Callable[[sqlite3.Connection], None]],
                 wal_max_frames: int = WAL_MAX_FRAMES) -> None:
        """`path` is a file path, a `file:` URI (e.g. `?mode=ro`), or `:memory:` (one thread
        only: everything then shares the writer connection). `wal_max_frames` bounds the
        WAL (`store_wal`)."""
        self._target = str(path)
        self._uri = self._target.startswith("file:")
        self.memory = self._target == ":memory:"
        if not (self._uri or self.memory):
            Path(self._target).parent.mkdir(parents=True, exist_ok=True)
            _create_private(Path(self._target))
        self.clock = clock
        self._busy_timeout = busy_timeout
        # the writer lock: held for every write transaction (and every `:memory:` read)
        self.lock = threading.Lock()
        self._closed = False
        self.commit_count = 0  # writer commits; lets tests see that deliveries are batched
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._readers_lock = threading.Lock()
        self._wal_max_frames = int(wal_max_frames)
        self._checkpointer: Checkpointer | None = None
        self._wconn = self._connect()
        try:
            if not self.memory:
                self._wconn.execute("PRAGMA journal_mode = WAL").fetchall()
                self._wconn.execute(f"PRAGMA journal_size_limit = "
                                    f"{self._wal_max_frames * 4096:d}").fetchall()
            if max_pages is not None:
                self._wconn.execute(f"PRAGMA max_page_count = {int(max_pages):d}").fetchall()
            self.schema_version = store_schema.migrate(self._wconn, tuple(schema_hooks))
            self.side_conn = self._wconn if self.memory else self._connect()
            if not self.memory:
                self._checkpointer = Checkpointer(self._connect, self.lock,
                                                  self._wal_max_frames)
        except (sqlite3.Error, StoreError) as exc:
            self._wconn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open store {self._target}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._target, uri=self._uri, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            # the first statement is where a file that is not a database fails
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000):d}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = FULL")
                # commits never checkpoint: `store_wal` does, in the background
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            except sqlite3.Error:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self._target}: {exc}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        holder = getattr(self._local, "reader", None)
        if holder is None:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            holder = _Reader(conn)
            self._local.reader = holder
            with self._readers_lock:
                self._readers.add(holder)
        return holder.conn

    def read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read(conn)` on this thread's reader connection (the writer's, under its lock, for
        `:memory:`). sqlite3 errors are StoreError."""
        try:
            if self.memory:
                with self.lock:
                    return read(self._wconn)
            return read(self._reader())
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from exc

    def rows(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        # fetchall, always: a half-read statement would pin an old snapshot of the WAL
        return self.read(lambda conn: conn.execute(sql, tuple(params)).fetchall())

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection; sqlite3 errors become StoreError."""
        with self.lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._wconn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"write failed: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("store: rollback failed")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"write failed: {exc}") from exc
                raise
            self.commit_count += 1
            if self._checkpointer is not None:
                self._checkpointer.committed()
                if self._wal_overgrown():
                    # the checkpoint thread fell behind (a starved CPU): this commit pays for
                    # the checkpoint itself, holding the writer lock, so the WAL stays bounded
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _wal_overgrown(self) -> bool:
        """The WAL file is past twice its bound (`wal_max_frames` pages of 4 KiB)."""
        if self._uri:
            return False
        try:
            size = os.path.getsize(f"{self._target}-wal")
        except OSError:
            return False
        return size > 2 * self._wal_max_frames * 4096

    def close(self) -> None:
        """Close every connection. Idempotent; the parts stop their threads first."""
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._wconn.close()
            if self.side_conn is not self._wconn:
                self.side_conn.close()
        with self._readers_lock:
            readers = list(self._readers)
        for holder in readers:
            holder.close()
