"""The host's end of the Kubernetes bridge: how a pod on another node reaches the gates that
listen on this host's unix sockets (docs/prds/kubernetes-bridge.md).

One TLS listener per run, its certificate and key made for it by `openssl` (the key 0600 in
the state dir, deleted by `close`). A pod opens a connection, sends `BB1 <channel> <token>\\n`
within a few seconds, and then speaks raw bytes to the host socket of that channel: `forge`
(the sidecar and git gate) or `egress` (the egress gate); `seed` instead gets a tar stream of
the bottle's workspace/ and home/, once per bridge (`kube_seed`). Every connection lives on one thread (an
event loop, the relay core of gate/pod_relay.py) and at most `max_connections` at a time.
A refused connection is closed without a word and logged in one line, never with the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackendError
from ..gate.pod_relay import (CHANNELS, CHUNK, PREAMBLE, READ, WRITE, Acceptor, Loop, Pair,
                              handshake_step)
from .kube_seed import SeedPump, seed_chunks

log = logging.getLogger(__name__)

PREAMBLE_MAX = 256            # bytes: `BB1 egress <43 characters of token>\n` is 55
PREAMBLE_SECONDS = 10.0       # from accept to a complete preamble, TLS handshake included
MAX_CONNECTIONS = 64
CERT_DAYS = "825"             # the key dies with the bridge; dates are not what protects it
_DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


@dataclass(frozen=True)
class BridgeInfo:
    host: str        # the address pods dial
    port: int
    token: str = field(repr=False)   # fresh per bridge; never logged, never in argv
    ca_pem: str                      # the bridge's self-signed certificate (public; pods pin it)


def subject_alt_name(host: str) -> str:
    """`IP:host` or `DNS:host` for the certificate; anything else (a comma would add names)
    is refused."""
    try:
        return f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        pass
    if _DNS_NAME.fullmatch(host):
        return f"DNS:{host}"
    raise BackendError(f"kube bridge: {host!r} is neither an IP address nor a DNS name")


def make_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """(certificate, key) for `host`, EC P-256, self-signed, made by `openssl` with a umask
    that keeps the key to its owner."""
    if not shutil.which("openssl"):
        raise BackendError("kube bridge: openssl is not installed")
    san = subject_alt_name(host)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    cert, key = directory / "bridge-cert.pem", directory / "bridge-key.pem"
    for old in (cert, key):
        old.unlink(missing_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", CERT_DAYS, "-subj", "/CN=bot-bottle bridge",
            "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)]
    try:
        subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=60, umask=0o077)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise BackendError(f"kube bridge: openssl could not make a certificate: "
                           f"{detail.decode(errors='replace').strip() or exc}") from exc
    key.chmod(0o600)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # the relay passes an agent's half-close on as a bare TCP FIN (Python cannot send a
    # close_notify and go on reading); OpenSSL 3 would take that for an attack and stop
    # writing the answer still due
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    context.num_tickets = 0   # nothing to resume: a pod's connections are few and long
    context.load_cert_chain(cert, key)
    return context


class Bridge:
    """The listener and its loop; a context manager (`with Bridge(...) as b: info = b.start()`)."""

    def __init__(self, state_dir: Path, *, listen_host: str, advertise_host: str,
                 forge_socket: str | None, egress_socket: str | None, seed_dir: Path | None,
                 max_connections: int = MAX_CONNECTIONS,
                 preamble_seconds: float = PREAMBLE_SECONDS):
        self.dir = Path(state_dir) / "bridge"
        self.listen_host, self.advertise_host = listen_host, advertise_host
        self.sockets = {"forge": forge_socket, "egress": egress_socket}
        self.seed_dir = Path(seed_dir) if seed_dir is not None else None
        self.max_connections, self.preamble_seconds = max_connections, preamble_seconds
        self.live = 0              # connections accepted and not yet closed (loop thread only)
        self.seed_served = False
        self._loop: Loop | None = None
        self._thread: threading.Thread | None = None
        self._files: tuple[Path, ...] = ()

    def __enter__(self) -> "Bridge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> BridgeInfo:
        if self._loop is not None:
            raise BackendError("kube bridge: already started")
        cert, key = make_certificate(self.dir, self.advertise_host)
        self._files = (cert, key)
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        try:
            self._context = server_context(cert, key)
            listener = socket.create_server((self.listen_host, 0), family=family, backlog=128)
        except (ssl.SSLError, OSError) as exc:
            self._remove_files()
            raise BackendError(f"kube bridge: cannot listen on {self.listen_host}: "
                               f"{exc.strerror or exc}") from exc
        self._token = secrets.token_urlsafe(32).encode("ascii")
        port = listener.getsockname()[1]
        self._loop = Loop(report=lambda line: log.error("kube bridge: %s", line))
        Acceptor(self._loop, listener, self._accept)
        self._thread = threading.Thread(target=self._loop.run, name="kube-bridge", daemon=True)
        self._thread.start()
        return BridgeInfo(self.advertise_host, port, self._token.decode("ascii"),
                          cert.read_text(encoding="ascii"))

    def close(self) -> None:
        """Stop serving, close every connection, delete the key; returns when all that is done."""
        if self._loop is not None:
            self._loop.stop()
            self._thread.join()
        self._remove_files()

    def _remove_files(self) -> None:
        for path in self._files:
            path.unlink(missing_ok=True)

    # --- on the loop's thread ---

    def _accept(self, conn: socket.socket, addr) -> None:
        where = _address(addr)
        if self.live >= self.max_connections:
            conn.close()
            log.warning("kube bridge: refused %s: already %d connections", where, self.live)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        self.live += 1
        Incoming(self, self._context.wrap_socket(conn, server_side=True,
                                                 do_handshake_on_connect=False), where)

    def release(self) -> None:
        self.live -= 1

    def admit(self, incoming: "Incoming", line: bytes, rest: bytes) -> None:
        """Relay a connection whose preamble is `line`, or refuse it."""
        parts = line.split(b" ")
        token = parts[2] if len(parts) == 3 else b""
        token_ok = hmac.compare_digest(token, self._token)
        if len(parts) != 3 or parts[0] != PREAMBLE.encode():
            return incoming.refuse("a malformed preamble")
        if not token_ok:
            return incoming.refuse("a wrong token")
        channel = parts[1].decode("ascii", "replace")
        if channel not in CHANNELS:
            return incoming.refuse("an unknown channel")
        if channel == "seed":
            if self.seed_dir is None or self.seed_served:
                return incoming.refuse("the seed, " + ("already served" if self.seed_served
                                                       else "which this run does not serve"))
            self.seed_served = True
            SeedPump(self._loop, incoming.hand_over(), seed_chunks(self.seed_dir), self.release)
            return
        path = self.sockets[channel]
        if path is None:
            return incoming.refuse(f"the {channel} channel, which this run does not serve")
        host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        host.setblocking(False)
        try:
            host.connect(path)   # a unix socket: at once, or EAGAIN when its backlog is full
        except OSError as exc:
            host.close()
            return incoming.refuse(f"the {channel} socket: {exc.strerror or exc}")
        Pair(self._loop, incoming.hand_over(), host, to_server=rest, on_close=self.release)


def _address(addr) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"


class Incoming:
    """An accepted connection until its preamble: TLS handshake, then one line, in time."""

    def __init__(self, bridge: Bridge, tls: ssl.SSLSocket, where: str):
        self.bridge, self.loop, self.tls, self.where = bridge, bridge._loop, tls, where
        self.buf = b""
        self.handshaken = self.closed = False
        self.loop.handlers.add(self)
        self.loop.deadlines[self] = time.monotonic() + bridge.preamble_seconds
        self.event(tls, 0)

    def event(self, sock, mask) -> None:
        try:
            if not self.handshaken:
                wait = handshake_step(self.tls)
                if wait:
                    self.loop.watch(self.tls, wait, self)
                    return
                self.handshaken = True
            data = self.tls.recv(CHUNK)
        except (ssl.SSLWantReadError, BlockingIOError):
            self.loop.watch(self.tls, READ, self)
            return
        except ssl.SSLWantWriteError:
            self.loop.watch(self.tls, WRITE, self)
            return
        except (ssl.SSLError, OSError) as exc:
            what = "the TLS handshake" if not self.handshaken else "reading the preamble"
            self.refuse(f"{what} failed ({getattr(exc, 'reason', None) or type(exc).__name__})")
            return
        if not data:
            self.refuse("closed before its preamble")
            return
        self.buf += data
        line, newline, rest = self.buf.partition(b"\n")
        if newline and len(line) < PREAMBLE_MAX:
            self.bridge.admit(self, line, rest)
        elif len(self.buf) >= PREAMBLE_MAX:
            self.refuse("a preamble too long")
        else:
            self.loop.watch(self.tls, READ, self)

    def expire(self) -> None:
        self.refuse(f"no preamble within {self.bridge.preamble_seconds:g} s")

    def refuse(self, reason: str) -> None:
        log.warning("kube bridge: refused %s: %s", self.where, reason)
        self.close()

    def hand_over(self) -> ssl.SSLSocket:
        self.closed = True
        self.loop.drop(self, self.tls)
        return self.tls

    def close(self) -> None:
        if not self.closed:
            self.hand_over().close()
            self.bridge.release()
