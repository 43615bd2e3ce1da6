"""The in-pod side of the Kubernetes bridge (standard library only, no imports from bot_bottle:
it runs as a plain file from a ConfigMap, by whatever python3 the pod's image has).

    python3 -I pod_relay.py seed --bridge HOST:PORT --ca FILE --token-file FILE --into DIR
    python3 -I pod_relay.py run --bridge HOST:PORT --ca FILE --token-file FILE \
        --forge-socket PATH [--proxy-port N] [--stdin FILE] -- AGENT ARGV...

Every connection to the host's bridge is TLS, verified against the bridge's own certificate
(the only CA the relay trusts) for HOST, and opens with the line `BB1 <channel> <token>\\n`.

`seed` fetches the tar of the bottle's workspace/ and home/ (channel `seed`) and extracts it into
DIR refusing anything unsafe (absolute names, `..`, hard links, devices, a symlink leading out
of DIR); a stream cut short is an error, not a smaller workspace.

`run` is forwarder.py across the network: it listens on the unix socket PATH (channel `forge`)
and on 127.0.0.1:N (channel `egress`), relays each connection to the bridge on one thread (an
event loop of non-blocking sockets, TLS included), and runs the agent as its child with stdin
from FILE (or /dev/null) and the same environment, stdout and stderr. It exits with the agent's
status (128+N when signal N killed it), forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and
SIGUSR2, and reaps every orphan (it is pid 1 in the pod). It prints nothing unless it cannot do
its job. The token file is read once, at start.

The bridge (bot_bottle/backend/kube_bridge.py) imports its relay core from here (`Loop`,
`Acceptor`, `Pair`, `Goodbye`, `handshake_step`): one implementation for both ends. The agent's
side duplicates forwarder.py's child handling on purpose: each runs as a lone file.
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import signal
import socket
import ssl
import sys
import tarfile
import threading
import time

CHUNK = 64 * 1024             # larger than a TLS record, so one recv leaves no bytes inside ssl
PREAMBLE = "BB1"
CHANNELS = ("forge", "egress", "seed")
DIAL_TIMEOUT = 15.0           # TCP connect + TLS handshake to the bridge, per connection
SEED_TIMEOUT = 60.0           # any single read of the seed stream
CONNECT_RETRIES = (0.5, 1, 2, 4, 8)   # seed only: a new pod's network may lag its start
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the one trusted certificate is made for this run and its
# key deleted after it, so validity dates protect nothing, and a node whose clock is a few
# seconds behind the host's would otherwise see it as "not yet valid".
NO_CHECK_TIME = 0x200000
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
_GONE = b"bot-bottle relay: the bridge to the host is not reachable\n"
UNREACHABLE = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n%s" % (len(_GONE), _GONE))
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class RelayError(Exception):
    """The relay cannot do its job; the message is its one line on stderr (exit 1)."""


class UsageError(RelayError):
    """A bad command line (exit 2)."""


def say(line: str) -> None:
    sys.stderr.write(f"bot-bottle relay: {line}\n")
    sys.stderr.flush()


def half_close(sock: socket.socket) -> None:
    """No more bytes from us, at the TCP level: on a TLS socket `shutdown` would drop the TLS
    state, and a close_notify would make OpenSSL discard what the peer still sends."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass


def handshake_step(tls: ssl.SSLSocket) -> int:
    """One step of a non-blocking TLS handshake: 0 when done, else the event it waits for.
    A failed handshake raises (ssl.SSLError, OSError)."""
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        return READ
    except ssl.SSLWantWriteError:
        return WRITE
    return 0


class Loop:
    """Every socket on one thread. Handlers have `event(sock, mask)` and `close()`, and
    `expire()` when they set a deadline. `stop()` may be called from any thread; when `run`
    returns every handler still alive has been closed."""

    def __init__(self, report=say):
        self.sel = selectors.DefaultSelector()
        self.report = report
        self.watched: dict = {}     # sock -> (mask, handler)
        self.ready: dict = {}       # TLS sock holding decrypted bytes select cannot see -> handler
        self.deadlines: dict = {}   # handler -> time.monotonic() of its expire()
        self.handlers: set = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, READ, None)
        self._stopping = False

    def watch(self, sock: socket.socket, mask: int, handler) -> None:
        if not mask:
            self.forget(sock)
            return
        if mask & READ and isinstance(sock, ssl.SSLSocket) and sock.pending():
            self.ready[sock] = handler
        old = self.watched.get(sock)
        if old == (mask, handler):
            return
        if old:
            self.sel.modify(sock, mask, handler)
        else:
            self.sel.register(sock, mask, handler)
        self.watched[sock] = (mask, handler)

    def forget(self, sock: socket.socket) -> None:
        if self.watched.pop(sock, None):
            self.sel.unregister(sock)
        self.ready.pop(sock, None)

    def drop(self, handler, *socks: socket.socket) -> None:
        """`handler` is done with the loop (its sockets closed or handed to another)."""
        self.handlers.discard(handler)
        self.deadlines.pop(handler, None)
        for sock in socks:
            self.forget(sock)

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def run(self) -> None:
        try:
            while not self._stopping:
                self._step()
        finally:
            for handler in list(self.handlers):
                handler.close()
            self.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _step(self) -> None:
        timeout = None
        if self.ready:
            timeout = 0
        elif self.deadlines:
            timeout = max(0.0, min(self.deadlines.values()) - time.monotonic())
        for key, mask in self.sel.select(timeout):
            if key.data is None:
                try:
                    self._wake_r.recv(64)
                except OSError:
                    pass
            elif self.watched.get(key.fileobj, (0, None))[1] is key.data:
                self._call(key.data, "event", key.fileobj, mask)
        for sock, handler in list(self.ready.items()):
            if self.ready.pop(sock, None) is handler:
                self._call(handler, "event", sock, READ)
        now = time.monotonic()
        for handler, when in list(self.deadlines.items()):
            if when <= now and self.deadlines.pop(handler, None) is not None:
                self._call(handler, "expire")

    def _call(self, handler, name: str, *args) -> None:
        try:
            getattr(handler, name)(*args)
        except Exception as exc:   # a bug: lose this connection, not all of them
            self.report(f"{type(handler).__name__}.{name}: {exc!r}")
            handler.close()


class Pair:
    """One relayed connection: `client` (whose end of input is passed on as a half-close) and
    `server` (whose end of output ends the exchange), either of them TLS. Bytes one side cannot
    take yet wait in `pending`, and the other side is not read meanwhile, so a slow reader slows
    its writer and each direction holds at most one chunk."""

    def __init__(self, loop: Loop, client: socket.socket, server: socket.socket, *,
                 to_server: bytes = b"", on_close=None):
        self.loop, self.client, self.server, self.on_close = loop, client, server, on_close
        self.peer = {client: server, server: client}
        self.pending = {client: b"", server: to_server}
        self.eof = {client: False, server: False}
        self.extra = {client: 0, server: 0}   # what a TLS read or write waits for besides
        self.closed = False
        loop.handlers.add(self)
        for sock in (client, server):
            sock.setblocking(False)
        self.event(server, 0)

    def event(self, sock: socket.socket, mask: int) -> None:
        if self.closed:
            return
        self.extra[sock] = 0
        try:
            if self.pending[sock]:
                self._flush(sock)
            if not self.closed and not self.eof[sock] and not self.pending[self.peer[sock]]:
                self._read(sock)
        except OSError:
            self.close()
            return
        if not self.closed:
            self._interest()

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except ssl.SSLWantWriteError:
            self.extra[sock] |= WRITE
            return
        peer = self.peer[sock]
        if data:
            self.pending[peer] += data
            self._flush(peer)
            return
        self.eof[sock] = True
        self._after_eof(sock)

    def _flush(self, sock: socket.socket) -> None:
        data = self.pending[sock]
        if data:
            try:
                sent = sock.send(data)   # TLS: the same bytes again after a "want", as it requires
            except (BlockingIOError, ssl.SSLWantWriteError):
                sent = 0
            except ssl.SSLWantReadError:
                sent = 0
                self.extra[sock] |= READ
            self.pending[sock] = data[sent:]
        if not self.pending[sock] and self.eof[self.peer[sock]]:
            self._after_eof(self.peer[sock])

    def _after_eof(self, sock: socket.socket) -> None:
        if self.closed or self.pending[self.peer[sock]]:
            return
        if sock is self.server:
            self._finish()
        else:
            half_close(self.server)

    def _finish(self) -> None:
        """The server said all it had and the client has it: a TLS client is told so with a
        close_notify (so it can tell the end from a cut), a plain one by the close."""
        if not isinstance(self.client, ssl.SSLSocket):
            self.close()
            return
        self.closed = True
        self.loop.drop(self, self.client, self.server)
        self.server.close()
        Goodbye(self.loop, self.client, self.on_close)

    def _interest(self) -> None:
        for sock in (self.client, self.server):
            mask = self.extra[sock]
            if not self.eof[sock] and not self.pending[self.peer[sock]]:
                mask |= READ
            if self.pending[sock]:
                mask |= WRITE
            self.loop.watch(sock, mask, self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.drop(self, self.client, self.server)
        self.client.close()
        self.server.close()
        if self.on_close:
            self.on_close()


class Goodbye:
    """Send a TLS close_notify (as far as the peer lets us within a few seconds), then close."""

    def __init__(self, loop: Loop, tls: ssl.SSLSocket, on_close=None, seconds: float = 10.0):
        self.loop, self.tls, self.on_close, self.closed = loop, tls, on_close, False
        loop.handlers.add(self)
        loop.deadlines[self] = time.monotonic() + seconds
        self.event(tls, 0)

    def event(self, sock, mask) -> None:
        try:
            self.tls.unwrap()
        except ssl.SSLWantWriteError:
            self.loop.watch(self.tls, WRITE, self)
            return
        except (OSError, ValueError):   # sent, and the peer's own is not there yet; or gone
            pass
        self.close()

    def expire(self) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.drop(self, self.tls)
        self.tls.close()
        if self.on_close:
            self.on_close()


# --- the relay's end: dialing the bridge ---------------------------------------------------

class BridgeClient:
    """Where and how to dial: the address (resolved once), the pinned TLS context, the token."""

    def __init__(self, spec: str, ca_file: str, token_file: str):
        host, sep, port = spec.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--bridge wants HOST:PORT, not {spec!r}")
        self.host = host
        try:
            with open(token_file, encoding="ascii") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RelayError(f"cannot read the token file {token_file}: {exc}") from None
        if not token or any(c.isspace() for c in token):
            raise RelayError(f"the token file {token_file} holds no token")
        self.token = token
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # hostname checked, cert required
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.verify_flags |= NO_CHECK_TIME
        try:
            self.ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise RelayError(f"cannot load the bridge certificate {ca_file}: {exc}") from None
        try:
            family, _, _, _, addr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        except OSError as exc:
            raise RelayError(f"cannot resolve {host}: {exc}") from None
        self.family, self.addr = family, addr

    def preamble(self, channel: str) -> bytes:
        return f"{PREAMBLE} {channel} {self.token}\n".encode("ascii")

    def wrap(self, sock: socket.socket, **kw) -> ssl.SSLSocket:
        return self.ctx.wrap_socket(sock, server_hostname=self.host, **kw)


class Dial:
    """An agent's connection waiting for its own TLS connection to the bridge; then a Pair."""

    def __init__(self, loop: Loop, bridge: BridgeClient, agent: socket.socket, channel: str):
        self.loop, self.bridge, self.agent, self.channel = loop, bridge, agent, channel
        self.closed = False
        loop.handlers.add(self)
        loop.deadlines[self] = time.monotonic() + DIAL_TIMEOUT
        raw = socket.socket(bridge.family, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = bridge.wrap(raw, do_handshake_on_connect=False)   # takes over raw's fd
        self.tls.setblocking(False)
        rc = self.tls.connect_ex(bridge.addr)
        self.connecting = rc != 0
        if rc not in (0, errno.EINPROGRESS):
            self.fail(os.strerror(rc))
        elif self.connecting:
            loop.watch(self.tls, WRITE, self)
        else:
            self.event(self.tls, 0)

    def event(self, sock, mask) -> None:
        if self.connecting:
            err = self.tls.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(os.strerror(err))
                return
            self.connecting = False
        try:
            wait = handshake_step(self.tls)
        except (ssl.SSLError, OSError) as exc:
            self.fail(f"TLS: {getattr(exc, 'reason', None) or exc}")
            return
        if wait:
            self.loop.watch(self.tls, wait, self)
            return
        self.closed = True
        self.loop.drop(self, self.tls)
        Pair(self.loop, self.agent, self.tls, to_server=self.bridge.preamble(self.channel))

    def expire(self) -> None:
        self.fail("timed out")

    def fail(self, reason: str) -> None:
        say(f"cannot reach the bridge at {self.bridge.host} for {self.channel}: {reason}")
        try:
            self.agent.send(UNREACHABLE)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.drop(self, self.tls)
        self.tls.close()
        self.agent.close()


class Acceptor:
    """A listener: each connection it accepts goes to `on_connection(conn, addr)`."""

    def __init__(self, loop: Loop, listener: socket.socket, on_connection):
        self.loop, self.listener, self.on_connection = loop, listener, on_connection
        listener.setblocking(False)
        loop.handlers.add(self)
        loop.watch(listener, READ, self)

    def event(self, sock, mask) -> None:
        try:
            conn, addr = self.listener.accept()
        except OSError:
            return
        self.on_connection(conn, addr)

    def close(self) -> None:
        self.loop.drop(self, self.listener)
        self.listener.close()


# --- seed: fetch and extract the bottle --------------------------------------------------

SEED_TOPS = ("workspace", "home")


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why `member` may not be extracted, or None. Names are checked as written (before any
    filesystem lookup); links through the filesystem are refused while extracting."""
    name = member.name
    parts = name.split("/")
    if "\0" in name or "\0" in member.linkname:
        return "a name with a NUL byte"
    if name.startswith("/"):
        return "an absolute name"
    if ".." in parts:
        return "a name with '..'"
    parts = [p for p in parts if p not in ("", ".")]
    if not parts or parts[0] not in SEED_TOPS:
        return "a name outside workspace/ and home/"
    if member.issym():   # pointing anywhere: made last and never followed (see `extract`)
        return None if member.linkname else "a symlink to nothing"
    if not (member.isreg() or member.isdir()):
        return "a link, device or special file"
    return None


def _checked_parent(into: str, parts: list[str]) -> str:
    """The directory `parts[:-1]` under `into`, made if missing, never through a symlink."""
    path = into
    for part in parts[:-1]:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if os.path.islink(path) or not os.path.isdir(path):
                raise RelayError(f"refusing the seed: {path} is not a directory") from None
    return path


def extract(tar: tarfile.TarFile, into: str) -> None:
    """Every member of the (stream) `tar` under `into`, refusing the whole seed at the first
    unsafe one; modes lose setuid/setgid/sticky bits and group/other write. Symlinks may point
    anywhere (a virtualenv's `bin/python -> /usr/bin/python3`), as bwrap's snapshots keep
    them: they are made last, so nothing is ever written through one (no parent may be a link,
    files are created O_EXCL|O_NOFOLLOW, a link never replaces a directory); what they point
    at is the pod's own file system, which the agent can read anyway."""
    os.makedirs(into, mode=0o700, exist_ok=True)
    into = os.path.realpath(into)
    dirs, links = [], []
    for member in tar:
        problem = member_problem(member)
        if problem is None and not member.issym() and hasattr(tarfile, "data_filter"):
            try:
                tarfile.data_filter(member, into)
            except tarfile.FilterError as exc:
                problem = str(exc)
        if problem:
            raise RelayError(f"refusing the seed: {member.name!r} is {problem}")
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        path = os.path.join(_checked_parent(into, parts), parts[-1])
        if member.issym():
            links.append((path, member))
        elif member.isdir():
            if os.path.islink(path) or not os.path.isdir(path):
                _clear(path, member)
                os.mkdir(path, 0o700)
            dirs.append((path, member))
        else:
            _clear(path, member)
            _write_file(tar, member, path)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    for path, member in links:
        _clear(path, member)
        os.symlink(member.linkname, path)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    for path, member in reversed(dirs):   # last: a read-only directory takes no more children
        os.chmod(path, (member.mode & 0o755) | 0o700)   # a directory: `_clear` saw to that
        os.utime(path, (member.mtime, member.mtime))


def _clear(path: str, member: tarfile.TarInfo) -> None:
    """Make room at `path` for `member`: a file or link there goes (the later member wins),
    a directory stays and refuses the seed."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise RelayError(f"refusing the seed: {member.name!r} would replace a directory")
    if os.path.lexists(path):
        os.unlink(path)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
    source = tar.extractfile(member)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as out:
        while data := source.read(CHUNK):
            out.write(data)
        os.fchmod(out.fileno(), (member.mode & 0o755) | 0o600)


def _connect(bridge: BridgeClient) -> socket.socket:
    for delay in (*CONNECT_RETRIES, None):
        try:
            return socket.create_connection(bridge.addr[:2], timeout=SEED_TIMEOUT)
        except OSError as exc:
            if delay is None:
                raise RelayError(f"cannot reach the bridge at {bridge.host}: {exc}") from None
            time.sleep(delay)


def seed(bridge: BridgeClient, into: str) -> None:
    raw = _connect(bridge)
    try:
        # a cut stream must not look like a smaller workspace: only a close_notify ends it
        tls = bridge.wrap(raw, suppress_ragged_eofs=False)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise RelayError(f"TLS to the bridge at {bridge.host}: "
                         f"{getattr(exc, 'reason', None) or exc}") from None
    with tls, tls.makefile("rb") as stream:
        try:
            tls.sendall(bridge.preamble("seed"))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                extract(tar, into)
            trailing = 0
            while data := stream.read(CHUNK):   # the archive's padding, up to the close_notify
                trailing += len(data)
                if trailing > 1 << 20:
                    raise RelayError("the seed stream goes on after its archive")
        except ssl.SSLEOFError:
            raise RelayError("the bridge cut the seed stream (a refused token, or the seed "
                             "already served)") from None
        except (tarfile.TarError, OSError) as exc:
            raise RelayError(f"the seed stream failed: {exc}") from None


# --- run: the agent's relay ----------------------------------------------------------------

def listen_unix(path: str) -> socket.socket:
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)   # one thread so far: nobody else creates files meanwhile
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(128)
    return listener


def listen_tcp(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    return listener


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_child(command: list[str], stdin_fd: int) -> int:
    """Run the agent; forward signals; reap everything; the agent's exit status."""
    child = {"pid": None, "pending": []}

    def forward(signum, frame):
        if child["pid"] is None:
            child["pending"].append(signum)
        else:
            try:
                os.kill(child["pid"], signum)
            except ProcessLookupError:
                pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        child["pid"] = os.posix_spawnp(command[0], command, os.environ,
                                       file_actions=[(os.POSIX_SPAWN_DUP2, stdin_fd, 0)],
                                       setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        say(f"cannot run {command[0]!r}: {exc.strerror or exc}")
        return 126 if isinstance(exc, PermissionError) else 127
    finally:
        os.close(stdin_fd)
    for signum in child["pending"]:
        forward(signum, None)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == child["pid"]:
            return _exit_code(status)


def run(opts: argparse.Namespace, bridge: BridgeClient) -> int:
    try:
        stdin_fd = os.open(opts.stdin or os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RelayError(f"cannot open {opts.stdin}: {exc.strerror}") from None
    loop = Loop()
    try:
        Acceptor(loop, listen_unix(opts.forge_socket),
                 lambda conn, _: Dial(loop, bridge, conn, "forge"))
        if opts.proxy_port is not None:
            def egress(conn, _):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                Dial(loop, bridge, conn, "egress")
            Acceptor(loop, listen_tcp(opts.proxy_port), egress)
    except OSError as exc:
        os.close(stdin_fd)
        raise RelayError(f"cannot listen: {exc.strerror or exc}") from None
    threading.Thread(target=loop.run, daemon=True, name="relay").start()
    return run_child(opts.command, stdin_fd)


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, not a usage block
        raise UsageError(message)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="pod_relay.py", add_help=False)
    parser.add_argument("mode", choices=("seed", "run"))
    for name in ("--bridge", "--ca", "--token-file"):
        parser.add_argument(name, required=True)
    parser.add_argument("--into")
    parser.add_argument("--forge-socket")
    parser.add_argument("--proxy-port", type=int)
    parser.add_argument("--stdin")
    split = argv.index("--") if "--" in argv else len(argv)
    opts = parser.parse_args(argv[:split])
    opts.command = argv[split + 1:]
    if opts.mode == "seed" and (not opts.into or opts.command):
        raise UsageError("seed wants --into DIR and no command")
    if opts.mode == "run" and (not opts.forge_socket or not opts.command):
        raise UsageError("run wants --forge-socket PATH and -- ARGV...")
    return opts


def main(argv: list[str]) -> int:
    try:
        opts = parse(argv)
        bridge = BridgeClient(opts.bridge, opts.ca, opts.token_file)
        if opts.mode == "seed":
            seed(bridge, opts.into)
            return 0
        return run(opts, bridge)
    except RelayError as exc:
        say(str(exc))
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
