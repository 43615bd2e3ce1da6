"""Servers that end with their test: `serve_in_thread` for a `socketserver` server of ours,
`serve_connections`, a raw accept loop for tests' stand-in servers.

A loop left blocked in `accept()` after its listener was closed outlives the test, and such
leaked loops answered later tests' connections in the same process (a FakeGitea's git request
got a stand-in gate's upper-cased echo back; a broken server's truncated body hung another).
The cleanup here wakes the accept (`shutdown`), waits for the thread, and only then closes
the listener, failing the test if the thread did not end.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable


def serve_connections(add_cleanup: Callable, listener: socket.socket,
                      handle: Callable[[socket.socket], None]) -> threading.Thread:
    """Call `handle(conn)` for each connection `listener` accepts, in one thread, until the
    test's cleanup; `handle` owns (and closes) `conn`."""
    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return   # shut down by the cleanup
            try:
                handle(conn)
            except OSError:
                pass     # the client went away; keep serving the others

    thread = threading.Thread(target=loop, daemon=True, name="test-accept-loop")

    def stop() -> None:
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass         # not connected/listening any more: accept already fails
        thread.join(10)
        listener.close()
        if thread.is_alive():
            raise AssertionError("a stand-in server's accept loop did not stop")

    add_cleanup(stop)
    thread.start()
    return thread


def serve_in_thread(testcase, server, poll: float = 0.05):
    """`server.serve_forever` on a thread until the test ends: shut down, closed (in-flight
    requests drained), then the thread joined. Returns the server."""
    thread = threading.Thread(target=server.serve_forever, args=(poll,), daemon=True)
    thread.start()
    testcase.addCleanup(thread.join, 10)
    testcase.addCleanup(server.server_close)
    testcase.addCleanup(server.shutdown)
    return server
