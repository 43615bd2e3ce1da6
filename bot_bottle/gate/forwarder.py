"""The egress gate's forwarder, run inside the bottle before the agent (standard library only,
no imports from bot_bottle: it runs as a plain script, by whatever python3 the bottle has).

    python3 -I /opt/bot-bottle/bot_bottle/gate/forwarder.py --port 3128 \
        --socket /run/bot-bottle/egress.sock -- AGENT ARGV...

It listens on 127.0.0.1:PORT (the bottle's only network is its own loopback), relays every
TCP connection byte for byte to the gate's unix socket (all of them on one thread, an event loop
of non-blocking sockets: no thread hand-offs on the way), and runs the agent as its child with
the same environment, stdin, stdout and stderr. It exits with the agent's exit status (128+N
when a signal N killed it), forwards the signals a supervisor sends (SIGTERM, SIGINT, SIGHUP,
SIGQUIT, SIGUSR1, SIGUSR2), and reaps every orphan meanwhile (it may be pid 1 in a container).
It prints nothing unless it cannot do its job.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import threading

CHUNK = 64 * 1024
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
_GONE = b"bot-bottle forwarder: the egress gate is not reachable\n"
UNREACHABLE = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n%s" % (len(_GONE), _GONE))


class Pair:
    """One relayed connection: the agent's TCP socket and ours to the gate, both non-blocking.
    Bytes one side cannot take yet wait in `pending` (and the other side is not read meanwhile,
    so a slow reader slows its writer instead of growing memory)."""

    def __init__(self, loop: "Loop", client: socket.socket, gate: socket.socket):
        self.loop, self.peer = loop, {client: gate, gate: client}
        self.client, self.gate = client, gate
        self.pending = {client: b"", gate: b""}   # bytes waiting to be written to that socket
        self.eof = {client: False, gate: False}   # that socket has nothing more to send
        self.closed = False
        self.mask = {client: 0, gate: 0}          # what the selector watches on each
        for sock in (client, gate):
            sock.setblocking(False)
        self._interest()

    def event(self, sock: socket.socket, mask: int) -> None:
        if self.closed:   # closed by the other socket's event of the same round
            return
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(sock)
            if mask & selectors.EVENT_READ and not self.closed:
                self._read(sock)
        except OSError:
            self.close()
            return
        if not self.closed:
            self._interest()

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
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
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            self.pending[sock] = data[sent:]
        if not self.pending[sock] and self.eof[self.peer[sock]]:
            self._after_eof(self.peer[sock])

    def _after_eof(self, sock: socket.socket) -> None:
        """`sock` sent its last byte; once that reached the peer: the gate's end finishes the
        exchange, the agent's end is passed on as a half-close."""
        if self.pending[self.peer[sock]]:
            return
        if sock is self.gate:
            self.close()
        else:
            try:
                self.gate.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _interest(self) -> None:
        for sock in (self.client, self.gate):
            peer = self.peer[sock]
            mask = 0
            if not self.eof[sock] and not self.pending[peer]:
                mask |= selectors.EVENT_READ
            if self.pending[sock]:
                mask |= selectors.EVENT_WRITE
            if mask == self.mask[sock]:
                continue
            if not self.mask[sock]:
                self.loop.sel.register(sock, mask, self)
            elif mask:
                self.loop.sel.modify(sock, mask, self)
            else:   # nothing to do on it until the other side moves
                self.loop.sel.unregister(sock)
            self.mask[sock] = mask

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.gate):
            if self.mask[sock]:
                self.loop.sel.unregister(sock)
            sock.close()


class Loop:
    """Every connection on one thread: accept, connect to the gate, relay both ways."""

    def __init__(self, listener: socket.socket, gate_path: str):
        self.gate_path = gate_path
        self.sel = selectors.DefaultSelector()
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, "accept")

    def run(self) -> None:
        while True:
            for key, mask in self.sel.select():
                if key.data == "accept":
                    self._accept(key.fileobj)
                else:
                    try:
                        key.data.event(key.fileobj, mask)
                    except Exception as exc:   # a bug: lose this connection, not all of them
                        sys.stderr.write(f"bot-bottle forwarder: {exc!r}\n")
                        key.data.close()

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        gate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            gate.connect(self.gate_path)   # a unix socket: immediate
        except OSError:
            gate.close()
            try:
                client.sendall(UNREACHABLE)
            except OSError:
                pass
            client.close()
            return
        Pair(self, client, gate)


def parse(argv: list[str]) -> tuple[int, str, list[str]]:
    if "--" not in argv:
        raise ValueError("usage: forwarder.py --port N --socket PATH -- ARGV...")
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    values = dict(zip(opts[::2], opts[1::2]))
    if len(opts) % 2 or set(values) != {"--port", "--socket"} or not command:
        raise ValueError("usage: forwarder.py --port N --socket PATH -- ARGV...")
    return int(values["--port"]), values["--socket"], command


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(command: list[str]) -> int:
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
                                       setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        sys.stderr.write(f"bot-bottle: cannot run {command[0]!r}: {exc.strerror or exc}\n")
        return 126 if isinstance(exc, PermissionError) else 127
    for signum in child["pending"]:
        forward(signum, None)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == child["pid"]:
            return _exit_code(status)


def main(argv: list[str]) -> int:
    try:
        port, gate_path, command = parse(argv)
    except ValueError as exc:
        sys.stderr.write(f"bot-bottle forwarder: {exc}\n")
        return 2
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError as exc:
        sys.stderr.write(f"bot-bottle forwarder: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}\n")
        return 1
    threading.Thread(target=Loop(listener, gate_path).run, daemon=True).start()
    return run(command)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
