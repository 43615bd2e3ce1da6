"""Per-issue forge state (`ForgeState`) and its SQLite store, keyed by (owner, repo, issue).

The schema is exposed as `MIGRATIONS` + `apply_schema(conn)` so the orchestrator's store,
which owns `PRAGMA user_version` of the shared DB file, can apply it inside its own
migrations and pass `migrate=False`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS forge_state (
        owner TEXT NOT NULL, repo TEXT NOT NULL, issue_number INTEGER NOT NULL,
        pr_number INTEGER, agent TEXT NOT NULL, bottles TEXT NOT NULL, slug TEXT,
        state TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        last_done_status TEXT, last_done_summary TEXT,
        PRIMARY KEY (owner, repo, issue_number))""",
)
SCHEMA_VERSION = 1


def apply_schema(conn: sqlite3.Connection) -> None:
    for stmt in MIGRATIONS:
        conn.execute(stmt)


@dataclass(frozen=True)
class ForgeState:
    owner: str
    repo: str
    issue_number: int
    pr_number: int | None
    agent: str
    bottles: tuple[str, ...]
    slug: str | None
    state: str
    created_at: str
    updated_at: str
    last_done_status: str | None = None
    last_done_summary: str | None = None


_COLS = ("owner", "repo", "issue_number", "pr_number", "agent", "bottles", "slug", "state",
         "created_at", "updated_at", "last_done_status", "last_done_summary")


class SqliteForgeStateStore:
    def __init__(self, target: str | Path | sqlite3.Connection, *, migrate: bool = True) -> None:
        self._own = not isinstance(target, sqlite3.Connection)
        if self._own:
            self._conn = sqlite3.connect(str(target), check_same_thread=False,
                                         isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        else:
            self._conn = target
        self._lock = threading.Lock()
        if migrate:
            with self._lock:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    apply_schema(self._conn)
                    self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    self._commit()

    def _commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.commit()

    @staticmethod
    def _row(r: tuple) -> ForgeState:
        d = dict(zip(_COLS, r))
        d["bottles"] = tuple(json.loads(d["bottles"]))
        return ForgeState(**d)

    def get(self, owner: str, repo: str, issue_number: int) -> ForgeState | None:
        with self._lock:
            r = self._conn.execute(
                f"SELECT {', '.join(_COLS)} FROM forge_state "
                "WHERE owner = ? AND repo = ? AND issue_number = ?",
                (owner, repo, issue_number)).fetchone()
        return None if r is None else self._row(tuple(r))

    def put(self, st: ForgeState) -> None:
        vals = [getattr(st, c) for c in _COLS]
        vals[_COLS.index("bottles")] = json.dumps(list(st.bottles))
        with self._lock:
            self._conn.execute(
                f"INSERT OR REPLACE INTO forge_state ({', '.join(_COLS)}) "
                f"VALUES ({', '.join('?' * len(_COLS))})", vals)
            self._commit()

    def delete(self, owner: str, repo: str, issue_number: int) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM forge_state WHERE owner = ? AND repo = ? AND issue_number = ?",
                (owner, repo, issue_number))
            self._commit()
            return cur.rowcount > 0

    def all(self) -> list[ForgeState]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_COLS)} FROM forge_state "
                "ORDER BY owner, repo, issue_number").fetchall()
        return [self._row(tuple(r)) for r in rows]

    def close(self) -> None:
        if self._own:
            self._conn.close()
