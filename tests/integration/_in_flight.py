"""A webhook delivery known to be in the service's hands: sent with `Expect: 100-continue`, so
the service's `100 Continue` is the event that says a handler has parsed the head; the body
follows at once. Tests that need a request in flight (while the store is locked, while the
service stops) wait on that answer instead of sleeping."""

from __future__ import annotations

import hashlib
import hmac
import http.client


def start_delivery(port: int, secret: str, event_type: str, body: bytes, *,
                   delivery_id: str, timeout: float = 30.0) -> http.client.HTTPConnection:
    """POST a signed delivery to 127.0.0.1:`port`/webhook and return once the service has
    answered `100 Continue` and the body is sent; `getresponse()` on the connection reads
    the final answer. The caller closes the connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("POST", "/webhook")
        sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        for name, value in (("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))),
                            ("X-Gitea-Event", event_type), ("X-Gitea-Event-Type", event_type),
                            ("X-Gitea-Delivery", delivery_id), ("X-Gitea-Signature", sig),
                            ("Expect", "100-continue")):
            conn.putheader(name, value)
        conn.endheaders()
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):  # a byte at a time: never read past it
            byte = conn.sock.recv(1)
            if not byte:
                raise AssertionError(f"connection closed before 100 Continue: {interim!r}")
            interim += byte
        if not interim.startswith(b"HTTP/1.1 100 "):
            raise AssertionError(f"expected 100 Continue, got {interim!r}")
        conn.send(body)
    except BaseException:
        conn.close()
        raise
    return conn
