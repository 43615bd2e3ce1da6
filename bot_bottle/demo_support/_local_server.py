"""The lifecycle the tests' fake servers share (fake Gitea, fake Anthropic, fake OpenAI): a
`ThreadingHTTPServer` on 127.0.0.1, port 0, serving in a daemon thread; `stop` shuts the
serving loop down, closes the socket and joins the thread, so no loop outlives its test.
`ApiHandler` is the model APIs' handler base: quiet, keep-alive, JSON answers with an id.
"""

from __future__ import annotations

import json
import threading
import uuid
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


class ApiHandler(BaseHTTPRequestHandler):
    """A model API's handler: HTTP/1.1, no access log (the fakes record requests themselves),
    `_json` answers carrying a request id in the header the API names (`REQUEST_ID_HEADER`),
    `_sse` streamed answers."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    REQUEST_ID_HEADER = "request-id"
    EVENT_STREAM_TYPE = "text/event-stream"

    def log_message(self, format, *args):  # quiet: the record is in the fake's `requests`
        pass

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header(self.REQUEST_ID_HEADER, "req_" + uuid.uuid4().hex[:24])
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, chunks) -> None:
        """A streamed answer: each server-sent-event chunk written as soon as it is made."""
        self.send_response(200)
        self.send_header("Content-Type", self.EVENT_STREAM_TYPE)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
