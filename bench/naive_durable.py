"""The naive durable webhook receiver issue 13 measures the orchestrator against: what a
Python programmer would write in an afternoon with the standard library alone.

It owns one server, run as a script (`bench/webhook_vs_peer.py` starts it as a subprocess):
`ThreadingHTTPServer` (a thread per connection, HTTP/1.1 keep-alive, TCP_NODELAY so neither
side pays Nagle's delay, listen backlog 128), and for each `POST`: read the body, check the
HMAC-SHA256 of `X-Gitea-Signature` with `compare_digest` (401 if wrong), `json.loads` it (400
if it is not JSON), hand the row to one writer thread and wait, answer 200. The writer inserts
everything queued in one transaction and commits once (group commit: one fsync for many
deliveries) into SQLite in WAL mode with `synchronous=FULL`, so the 200 goes out only once the
delivery is on disk. `GET` answers 200 (a readiness probe). No logging per request.
`--hmac-only` drops the JSON parse and the store: the issue's "stdlib, HMAC, 200" row.

    python3 bench/naive_durable.py --port 8478 --db /tmp/naive.db   # secret from $BENCH_SECRET

The secret comes from the environment (`BENCH_SECRET`, default the benchmarks' own), not argv.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_SECRET = "bench-webhook-secret"
MAX_BODY = 25 * 1024 * 1024


class _Writer:
    """One thread owning the SQLite connection; callers queue rows and wait for the commit."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._queue: list[tuple[tuple, threading.Event]] = []
        self._cond = threading.Condition()
        ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, args=(ready,), name="writer",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            raise self._error

    def insert(self, row: tuple) -> None:
        done = threading.Event()
        with self._cond:
            self._queue.append((row, done))
            self._cond.notify()
        done.wait()

    def _loop(self, ready: threading.Event) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY, "
                         "delivery_id TEXT UNIQUE, event_type TEXT NOT NULL, body BLOB NOT NULL, "
                         "received_at REAL NOT NULL)")
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            ready.set()
            return
        ready.set()
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, self._queue = self._queue, []
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO deliveries (delivery_id, event_type, body, "
                             "received_at) VALUES (?, ?, ?, ?)", [row for row, _ in batch])
            conn.execute("COMMIT")
            for _, done in batch:
                done.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    secret = b""
    writer: _Writer | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_GET(self) -> None:
        self._answer(200, b'{"status": "ok"}')

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._answer(411 if length < 0 else 413, b'{"status": "error"}')
            return
        body = self.rfile.read(length)
        sig = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, self.headers.get("X-Gitea-Signature", "")):
            self._answer(401, b'{"status": "bad signature"}')
            return
        if self.writer is None:  # --hmac-only
            self._answer(200, b'{"status": "ok"}')
            return
        try:
            json.loads(body)
        except ValueError:
            self._answer(400, b'{"status": "not json"}')
            return
        self.writer.insert((self.headers.get("X-Gitea-Delivery") or None,
                            self.headers.get("X-Gitea-Event") or "", body, time.time()))
        self._answer(200, b'{"status": "stored"}')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", help="the SQLite file (created if missing)")
    p.add_argument("--hmac-only", action="store_true",
                   help="check the signature and answer 200: no JSON parse, nothing stored")
    args = p.parse_args(argv)
    if not args.hmac_only and not args.db:
        p.error("--db is required (unless --hmac-only)")
    _Handler.secret = os.environ.get("BENCH_SECRET", DEFAULT_SECRET).encode()
    _Handler.writer = None if args.hmac_only else _Writer(args.db)
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    server.daemon_threads = True
    # SIGTERM ends serve_forever from another thread (it must not be called from its own)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
