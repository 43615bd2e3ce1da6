"""Relaying bytes between the bottle's connection and the upstream one, both ways, as they come.

No buffering beyond one `recv`: a streamed response reaches the agent chunk by chunk. The
upstream-to-client direction runs on the caller's thread, the other on a pooled helper thread
(`Workers`). With
`rewrite_response`, the first response head (after any 1xx interim heads, which pass as they
are) gets `Connection: close` instead of its hop-by-hop headers, so the client never reuses a
connection the gate is about to close. A half-close is passed on for plain TCP; over TLS the
upstream's write side stays open (a TLS half-close would end the session early).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading

from .http import HeadError, closing_response, read_head

CHUNK = 64 * 1024
log = logging.getLogger(__name__)


class Workers:
    """Reused daemon threads. Starting a thread costs several times more than waking an idle
    one, and every relayed request needs two; idle workers wait for the next task, so the
    pool is as large as the busiest moment and never blocks interpreter exit."""

    def __init__(self, name: str):
        self._name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn, *args) -> threading.Event:
        """Run fn(*args) on a worker; the returned event is set when it has returned."""
        done = threading.Event()
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1   # that idle worker will take this task
        item = (fn, args, done)
        if spawn:
            threading.Thread(target=self._work, args=(item,), daemon=True, name=self._name).start()
        else:
            self._tasks.put(item)
        return done

    def _work(self, item) -> None:
        while True:
            fn, args, done = item
            try:
                fn(*args)
            except Exception:   # a bug in one connection must not cost the pool a worker
                log.exception("egress gate: %s failed", getattr(fn, "__name__", fn))
            finally:
                done.set()
            with self._lock:
                self._idle += 1
            item = self._tasks.get()


_HELPERS = Workers("gate-upload")


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """src → dst until EOF or an error on either side."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                return
            dst.sendall(view[:n])
    except OSError:
        return


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _response_heads(upstream: socket.socket, client: socket.socket) -> bool:
    """Pass interim 1xx heads as they are and the final head rewritten; False when the
    upstream ended or sent something that is not HTTP (then nothing more is relayed)."""
    pending = b""
    while True:
        try:
            raw, pending = read_head(upstream, pending)
            status = raw.split(b" ", 2)[1] if raw.count(b" ") >= 1 else b""
            interim = status.startswith(b"1") and status != b"101"
            client.sendall(raw if interim else closing_response(raw))
        except (HeadError, OSError, IndexError):
            return False
        if not interim:
            if pending:
                client.sendall(pending)
            return True


def relay(client: socket.socket, upstream: socket.socket, *, rewrite_response: bool = False,
          half_close_upstream: bool = True) -> None:
    """Relay until the upstream is done and the client has stopped sending; closes neither."""
    def upload():
        _copy(client, upstream)
        if half_close_upstream:
            _shutdown(upstream, socket.SHUT_WR)

    helper = _HELPERS.submit(upload)
    try:
        if not rewrite_response or _response_heads(upstream, client):
            _copy(upstream, client)
    except OSError:
        pass
    finally:
        # the response is complete: wake the upload thread (a close alone would not
        # interrupt its recv) and let it finish
        _shutdown(client, socket.SHUT_RDWR)
        helper.wait()
