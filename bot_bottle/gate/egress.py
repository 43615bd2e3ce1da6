"""The host side of the egress gate: a unix-socket server the CLI runs for its bottle.

Each connection from the bottle's forwarder carries one request head, handled by kind:
- `CONNECT host:port`: checked by the policy, then a tunnel to the checked address;
- `GET http://host/...` (any method, absolute URI): checked the same way, sent on in origin
  form with `Connection: close`, the response relayed;
- `/_upstream/<route>/...` (origin form, i.e. not a proxy request): the provider's API, with
  the real key swapped in (`credentials.py`), over verified HTTPS;
- `/_git/...` (origin form): the orchestrator's git gate, `/git/...` on its sidecar socket
  (`plan.git`), with the agent's credentials dropped and the run's bearer token added;
anything else gets 400. A refused destination gets 403 with a plain-text body saying why and
is reported to `on_refuse(host, port, reason)` (the CLI prints it and writes it to the agent
log). Every connection has its own (reused) thread, at most MAX_CONNECTIONS at a time; `stop()`
closes the listener and every open connection, so nothing outlives the run.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from . import GIT_ROUTE_PREFIX, GIT_SOCKET_PREFIX, PROXY_PORT, ROUTE_PREFIX
from .credentials import connect as connect_upstream, ssl_context
from .http import HOP_BY_HOP, Head, HeadError, answer, build_head, parse_head, read_head, split_authority
from .pipe import Workers, relay
from .plan import EgressPlan
from .policy import Decision, Policy, getaddrinfo, host_addresses

HEAD_TIMEOUT = 30.0      # seconds the forwarder's client has to send its request head
CONNECT_TIMEOUT = 10.0
MAX_UNIX_PATH = 107      # sun_path holds 108 bytes with the NUL
# open connections per bottle: each holds a thread on the host, which an agent must not be able
# to multiply without bound; more than this get 503 at once (a real agent needs a handful)
MAX_CONNECTIONS = 256
ABSOLUTE_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONNECTIONS = Workers("egress-conn")   # shared by every gate of the process


class _Answer(Exception):
    """The gate answers the request itself (refusal, bad gateway, unknown route)."""

    def __init__(self, status: int, reason: str, body: str):
        super().__init__(body)
        self.response = answer(status, reason, body)


class Gate:
    def __init__(self, plan: EgressPlan, on_refuse: Callable[[str, int, str], None] | None = None, *,
                 own: frozenset | None = None, resolve=getaddrinfo, max_connections: int = MAX_CONNECTIONS):
        self.policy = Policy(plan.allow, {n: (ip, port) for n, ip, port in plan.pins},
                             host_addresses() if own is None else own, resolve)
        self.routes = {u.route: u for u in plan.upstreams}
        self.git = plan.git
        self.context = ssl_context(plan.ca_file)
        self.on_refuse = on_refuse or (lambda host, port, reason: None)
        self.counts: Counter = Counter()
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopped = False
        self._max = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._path: Path | None = None
        self._handlers = {"CONNECT": self._connect, "proxy": self._proxy, "upstream": self._upstream,
                          "git": self._git}

    # ---- lifecycle
    def listen(self, path: Path) -> "Gate":
        """Serve on the unix socket `path` (mode 0600; its directory made 0700)."""
        path = Path(path)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _bind(sock, path)
            os.chmod(path, 0o600)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self._listener, self._path = sock, path
        threading.Thread(target=self._accept_loop, daemon=True, name="egress-gate").start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        listener, self._listener = self._listener, None
        if listener is not None:
            _quiet(listener.shutdown, socket.SHUT_RDWR)   # wakes the accept loop
            listener.close()
        with self._lock:
            live = list(self._live)
        for conn in live:
            _quiet(conn.shutdown, socket.SHUT_RDWR)
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener = self._listener
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return   # stopped
            if not self._slots.acquire(blocking=False):
                self.counts["busy"] += 1
                _busy(conn, self._max)
                continue
            _CONNECTIONS.submit(self._serve, conn)

    # ---- one connection
    def _track(self, *socks, add=True) -> None:
        with self._lock:
            for s in socks:
                if add and self._stopped:   # accepted or dialled just as the run ended
                    _quiet(s.shutdown, socket.SHUT_RDWR)
                (self._live.add if add else self._live.discard)(s)

    def _serve(self, conn: socket.socket) -> None:
        self._track(conn)
        opened: list[socket.socket] = []   # upstream connections, closed with this one
        try:
            conn.settimeout(HEAD_TIMEOUT)
            raw, rest = read_head(conn)
            conn.settimeout(None)
            head = parse_head(raw)
            self._handlers[_kind(head)](conn, head, rest, opened)
        except _Answer as exc:
            _quiet(conn.sendall, exc.response)
        except HeadError as exc:
            _quiet(conn.sendall, answer(400, "Bad Request", f"bot-bottle egress gate: {exc or 'not a proxy request'}"))
        except OSError:
            pass   # the bottle's side went away
        finally:
            for s in (*opened, conn):
                self._track(s, add=False)
                s.close()
            self._slots.release()

    def _check(self, host: str, port: int) -> Decision:
        decision = self.policy.decide(host, port)
        if decision.refused:
            self.counts["refused"] += 1
            self.on_refuse(decision.host, port, decision.refused)
            raise _Answer(403, "Forbidden", f"bot-bottle egress gate: refused {decision.host}:{port}: "
                                             f"{decision.refused}")
        return decision

    def _dial(self, decision: Decision, opened: list) -> socket.socket:
        errors = []
        for family, sockaddr in decision.targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(sockaddr)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._track(sock)
                opened.append(sock)
                return sock
            except OSError as exc:
                sock.close()
                errors.append(f"{sockaddr[0]}: {exc.strerror or exc}")
        raise _Answer(502, "Bad Gateway", f"bot-bottle egress gate: cannot connect to "
                                           f"{decision.host}:{decision.port} ({'; '.join(errors)})")

    def _connect(self, conn, head: Head, rest: bytes, opened: list) -> None:
        try:
            host, port = split_authority(head.start[1], None)
        except ValueError as exc:
            raise HeadError(f"CONNECT {head.start[1]!r}: {exc}") from None
        upstream = self._dial(self._check(host, port), opened)
        self.counts["connect"] += 1
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        relay(conn, upstream)

    def _proxy(self, conn, head: Head, rest: bytes, opened: list) -> None:
        parts = urlsplit(head.start[1])
        if parts.scheme != "http":
            raise HeadError(f"{parts.scheme}:// URLs go through CONNECT")
        if "@" in parts.netloc:
            raise HeadError("credentials in the URL")
        try:
            host, port = split_authority(parts.netloc, 80)
        except ValueError as exc:
            raise HeadError(f"{head.start[1]!r}: {exc}") from None
        if host in ("127.0.0.1", "localhost") and port == PROXY_PORT \
                and parts.path.startswith((ROUTE_PREFIX, GIT_ROUTE_PREFIX)):
            # a client that sent its base-URL (or git) request through the proxy despite NO_PROXY
            head.start[1] = parts.path + (f"?{parts.query}" if parts.query else "")
            return self._handlers[_kind(head)](conn, head, rest, opened)
        upstream = self._dial(self._check(host, port), opened)
        self.counts["http"] += 1
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [("Host", parts.netloc)] + head.without(HOP_BY_HOP | {"host"}) + [("Connection", "close")]
        upstream.sendall(build_head([head.start[0], target, head.start[2]], headers) + rest)
        relay(conn, upstream, rewrite_response=True)

    def _upstream(self, conn, head: Head, rest: bytes, opened: list) -> None:
        name, _, tail = head.start[1][len(ROUTE_PREFIX):].partition("/")
        name, q, query = name.partition("?")
        route = self.routes.get(name)
        if route is None:
            raise _Answer(404, "Not Found", f"bot-bottle egress gate: no upstream {name!r} "
                                             f"(known: {', '.join(self.routes) or 'none'})")
        remainder = ("/" + tail if tail or head.start[1].endswith("/") else "") + (q + query)
        try:
            upstream = connect_upstream(route, self.context)
        except OSError as exc:   # ssl.SSLError included: a certificate that does not verify
            raise _Answer(502, "Bad Gateway", f"bot-bottle egress gate: upstream {route.base_url}: {exc}") from None
        self._track(upstream)
        opened.append(upstream)
        self.counts["upstream"] += 1
        upstream.sendall(build_head([head.start[0], route.target(remainder), "HTTP/1.1"],
                                    route.headers(head)) + rest)
        relay(conn, upstream, rewrite_response=True, half_close_upstream=False)

    def _git(self, conn, head: Head, rest: bytes, opened: list) -> None:
        if self.git is None:
            raise _Answer(404, "Not Found", "bot-bottle egress gate: no git gate for this bottle "
                                             "(it is not run by the orchestrator)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            _unix_connect(sock, Path(self.git.socket))
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            raise _Answer(502, "Bad Gateway", f"bot-bottle egress gate: the git gate is not "
                                               f"reachable ({exc.strerror or exc})") from None
        self._track(sock)
        opened.append(sock)
        self.counts["git"] += 1
        target = GIT_SOCKET_PREFIX + head.start[1][len(GIT_ROUTE_PREFIX):]
        # whatever credentials the agent's git sent are dropped: the run's token is the only one
        headers = ([("Host", "localhost")]
                   + head.without(HOP_BY_HOP | {"host", "authorization", "cookie"})
                   + [("Authorization", f"Bearer {self.git.token}"), ("Connection", "close")])
        sock.sendall(build_head([head.start[0], target, "HTTP/1.1"], headers) + rest)
        relay(conn, sock, rewrite_response=True, half_close_upstream=False)


def _kind(head: Head) -> str:
    method, target = head.start[0], head.start[1]
    if method == "CONNECT":
        return "CONNECT"
    if ABSOLUTE_URI_RE.match(target):
        return "proxy"
    if target.startswith(ROUTE_PREFIX):
        return "upstream"
    if target.startswith(GIT_ROUTE_PREFIX):
        return "git"
    raise HeadError("not a proxy request (use the proxy, the /_upstream/<route>/ base URL "
                    "or the /_git/ remote)")


def _bind(sock: socket.socket, path: Path) -> None:
    _at_path(sock.bind, path)


def _unix_connect(sock: socket.socket, path: Path) -> None:
    _at_path(sock.connect, path)


def _at_path(op, path: Path) -> None:
    """`op` (a socket's bind or connect) on the unix socket `path`; a path longer than sun_path
    allows is reached through an open handle on its directory (/proc/self/fd/N/name), so a
    deep $BOT_BOTTLE_HOME still works."""
    if len(os.fsencode(str(path))) <= MAX_UNIX_PATH:
        op(str(path))
        return
    dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        op(f"/proc/self/fd/{dfd}/{path.name}")
    finally:
        os.close(dfd)


def _busy(conn: socket.socket, limit: int) -> None:
    """503 without a thread; what the client already sent is read first (closing a unix
    socket with unread bytes would reset the connection before the answer is read)."""
    conn.setblocking(False)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.setblocking(True)
    _quiet(conn.sendall, answer(503, "Service Unavailable",
                                f"bot-bottle egress gate: more than {limit} open connections"))
    conn.close()


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass
