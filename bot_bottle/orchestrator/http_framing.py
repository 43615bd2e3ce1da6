"""The webhook port's request and answer bytes, for its event loop (`http_loop`), which reads
into a buffer instead of a blocking socket file: where a head ends in the buffered bytes, the
`http_head` limits checked on a head still arriving (so a client cannot make the loop buffer
an endless line), the framing rules once the head is whole, and an answer as one `bytes`.

The head itself is parsed by `http_head.read_head` once its blank line is in (the same parser,
limits and answers as the threaded transport: 414, 431, 400, 505, 501). The framing rules are
`http_handler`'s: chunked → 411, a body method without `Content-Length` → 411, an invalid one
→ 400, one over `max_body` → 413. One limit is added because the loop holds a whole head in
memory: a head over `MAX_HEAD` bytes → 431 (`http_head` alone allows 100 lines of 64 KiB).
`answer` (with its status phrases and `Date`) is the one way both transports write an answer.
"""

from __future__ import annotations

import io
import time
from email.utils import formatdate
from http import HTTPStatus

from bot_bottle.orchestrator import http_head
from bot_bottle.orchestrator.http_head import MAX_HEADERS, MAX_LINE, Head, HeadError
from bot_bottle.orchestrator.http_transport import Response

MAX_HEAD = 1 << 18  # 256 KiB: a forge's heads are a few hundred bytes
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def head_end(buf: bytearray) -> int:
    """The offset just past the head's blank line in `buf`, or -1 while it has not arrived.
    A blank first line is a head of its own (`read_head` answers it None: close)."""
    if buf[:1] == b"\n":
        return 1
    if buf[:2] == b"\r\n":
        return 2
    crlf, lf = buf.find(b"\n\r\n"), buf.find(b"\n\n")
    if crlf < 0:
        return lf + 2 if lf >= 0 else -1
    return crlf + 3 if lf < 0 or crlf < lf else lf + 2


def check_partial(buf: bytearray) -> None:
    """`HeadError` if a head still arriving already breaks a limit `read_head` enforces (a
    line over `MAX_LINE`, more than `MAX_HEADERS` fields) or is over `MAX_HEAD` bytes."""
    first = buf.find(b"\n")
    if first < 0 and len(buf) > MAX_LINE or first + 1 > MAX_LINE:
        raise HeadError(414, "request line too long")
    if first < 0:
        return
    if buf.count(b"\n") - 1 > MAX_HEADERS:
        raise HeadError(431, f"more than {MAX_HEADERS} headers")
    if len(buf) - buf.rfind(b"\n") - 1 > MAX_LINE:
        raise HeadError(431, "header line too long")
    if len(buf) > MAX_HEAD:
        raise HeadError(431, f"request head over {MAX_HEAD} bytes")


def parse_head(raw: bytes) -> Head | None:
    """`read_head` on a whole head (`raw` ends with its blank line); None for a blank one."""
    head = http_head.read_head(io.BytesIO(raw))  # its own limits first
    if len(raw) > MAX_HEAD:
        raise HeadError(431, f"request head over {MAX_HEAD} bytes")
    return head


def body_length(head: Head, max_body: int) -> int:
    """The body's length by the framing rules, or `HeadError` (answer it, then close: an
    unread body would be taken for the next request)."""
    headers = head.headers
    if headers.get("transfer-encoding"):
        raise HeadError(411, "chunked bodies are not accepted; send Content-Length")
    raw = headers.get("content-length")
    if raw is None:
        if head.method in BODY_METHODS:
            raise HeadError(411, "Content-Length required")
        return 0
    if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
        raise HeadError(400, "invalid Content-Length")
    length = int(raw)
    if length > max_body:
        raise HeadError(413, f"body over {max_body} bytes")
    return length


BODY_METHODS = ("POST", "PUT", "PATCH")
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_dates: list = [0, b""]  # the Date header's second and text: formatted once a second


def phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")


def date_header() -> bytes:
    now = int(time.time())
    if _dates[0] != now:
        _dates[:] = [now, formatdate(now, usegmt=True).encode()]
    return _dates[1]


def answer(response: Response, *, head_only: bool, close: bool) -> bytes:
    """An answer's bytes, for both transports (the loop's and `http_handler`'s): `nosniff` on
    every one, the body left out for `HEAD` (its length still said), `Connection: close` when
    closing."""
    parts = [b"HTTP/1.1 %d %s\r\nServer: bot-bottle\r\nDate: %s\r\n"
             b"X-Content-Type-Options: nosniff\r\n"
             % (response.status, phrase(response.status).encode(), date_header())]
    for name, value in response.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(b"Content-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                 % (response.content_type.encode("latin-1", "replace"), len(response.body),
                    b"Connection: close\r\n" if close else b""))
    if not head_only:
        parts.append(response.body)
    return b"".join(parts)
