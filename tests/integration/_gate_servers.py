"""Test servers for the egress gate: a certificate made with `openssl` for the names a test
pins, a plain HTTP server, and an HTTPS "model API" that records what reaches it and streams
a response whose end waits for the client's acknowledgement of its first bytes."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from tests._serve import serve_connections

ACK_WAIT = 20.0   # seconds the stream waits for the client's ack before ending anyway


def make_cert(directory: Path, names=("upstream.test", "localhost")) -> tuple[Path, Path]:
    """(certificate, key): self-signed, for `names` and 127.0.0.1; the certificate is its
    own CA (what BOT_BOTTLE_EGRESS_CA_FILE is given)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join([*(f"DNS:{n}" for n in names), "IP:127.0.0.1"])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):   # quiet
        pass

    def _send(self, status: int, body: bytes, ctype="application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _record(self, body: bytes = b"") -> None:
        with self.server.lock:
            self.server.requests.append({"method": self.command, "path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body})

    def do_GET(self):
        self._record()
        if self.path.endswith("/v1/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"first\n")
            self.server.acked_in_time = self.server.acked.wait(ACK_WAIT)
            self._chunk(b"last\n")
            self._chunk(b"")
        elif self.path.endswith("/v1/ack"):
            self.server.acked.set()
            self._send(200, b'{"ack": true}')
        else:
            self._send(200, f"hello from {self.server.label} {self.path}".encode(), "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._record(body)
        self._send(200, json.dumps({"id": "msg_1", "seen_path": self.path}).encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, label: str, context: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.label = label
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.acked = threading.Event()
        self.acked_in_time = None
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self, add_cleanup) -> "Server":
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        add_cleanup(self.server_close)
        add_cleanup(self.shutdown)
        return self


def tls_server(cert: Path, key: Path, add_cleanup, label="tls") -> Server:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return Server(label, ctx).start(add_cleanup)


def counting_listener(add_cleanup) -> tuple[int, list]:
    """A TCP port on the host's 127.0.0.1 that counts the connections it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list = []

    def count(conn):
        accepted.append(1)
        conn.close()
    serve_connections(add_cleanup, listener, count)
    return listener.getsockname()[1], accepted
