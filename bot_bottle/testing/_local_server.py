"""The lifecycle the tests' fake servers share (fake Gitea, fake Anthropic, fake OpenAI): a
`ThreadingHTTPServer` on 127.0.0.1, port 0, serving in a daemon thread; `stop` shuts the
serving loop down, closes the socket and joins the thread, so no loop outlives its test.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHTTPServer:
    """Base of a fake: its `start` calls `_serve(handler)`; `stop` (idempotent) and `url`."""

    POLL_INTERVAL = 0.05   # how soon `stop` is noticed by the serving loop
    server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": self.POLL_INTERVAL}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self._thread.join()
            self.server = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"
