"""Benchmark: the egress gate's cost on loopback, through the gate vs direct, in the same run.

Owns one measurement, run by hand (not in CI). It starts three processes: an upstream (a
stdlib HTTP server and the same handler behind TLS, with a certificate made by `openssl`),
the gate (`bot_bottle.gate.egress.Gate` on a unix socket, as the CLI serves it) and the
in-bottle forwarder (`bot_bottle/gate/forwarder.py` on a free 127.0.0.1 port, its agent a
`sleep`). The client is this process. "Direct" talks to the upstream itself; "gate" goes
client → forwarder (TCP) → gate (unix socket) → upstream, exactly the bottle's path without
the namespace. Each request opens a new connection in both cases (the gate closes after one
exchange), requests alternate gate/direct, after a warm-up.

- per request: p50/p99 of a small GET as a plain-HTTP proxy request, through a CONNECT tunnel,
  and through the provider route (the gate adds the key and speaks TLS to the upstream; the
  direct baseline is a TLS request of its own); target: p50 added ≤ 2 ms;
- time to the first body byte of a streamed (chunked) response, with the upstream sending its
  first chunk at once and after `--think-ms` (a model's time to first token is far longer);
  target ≤ 1.2× direct (judged on the `--think-ms` case, the 0 ms case printed beside it);
- 16 concurrent streams through one gate (`--streams`): each chunk carries the upstream's
  send time (CLOCK_MONOTONIC, shared by the processes), the client records each chunk's lag;
  p50/p99 lag and wall time vs 16 direct streams; then 16 concurrent bulk downloads
  (`--bulk-mib` each), aggregate MiB/s vs direct.

    python3 bench/egress_gate.py [--requests 400] [--streams 16] [--think-ms 20] [--bulk-mib 16]
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

KEY = "sk-bench-key-0123456789abcdef"
GATE_SCRIPT = """
import sys, time
from bot_bottle.gate.credentials import Upstream
from bot_bottle.gate.egress import Gate
from bot_bottle.gate.plan import EgressPlan
sock, port, tls_port, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
plan = EgressPlan(allow=("bench.test",), pins=(("bench.test", "127.0.0.1", port),), ca_file=ca,
                  upstreams=(Upstream("anthropic", f"https://localhost:{tls_port}", "x-api-key", %r),))
Gate(plan).listen(sock)
print("ready", flush=True)
sys.stdin.read()
""" % KEY


# ---- the upstream (run as a subprocess: `egress_gate.py --upstream CERT KEY`)
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
        if url.path.endswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            time.sleep(q.get("think_ms", 0) / 1000)
            size, gap = q.get("size", 64), q.get("gap_ms", 0) / 1000
            for i in range(q.get("chunks", 1)):
                if i and gap:
                    time.sleep(gap)
                data = f"{time.monotonic_ns()}\n".encode().ljust(size, b".")
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        elif url.path.endswith("/bulk"):
            total = q.get("bytes", 1 << 20)
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block = b"x" * 65536
            while total > 0:
                self.wfile.write(block[:total])
                total -= len(block)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def serve_upstream(cert: str, key: str) -> None:
    plain = Upstream(("127.0.0.1", 0), Handler)
    tls = Upstream(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    for s in (plain, tls):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(plain.server_address[1], tls.server_address[1], flush=True)
    sys.stdin.read()


# ---- the client
def _read_all(sock) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _request(target: str, host: str = "bench.test") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


class Paths:
    """One way to send a GET for `path`, returning a socket with the request sent."""

    def __init__(self, up_port, tls_port, fwd_port, ca):
        self.up, self.tls, self.fwd = up_port, tls_port, fwd_port
        self.ctx = ssl.create_default_context(cafile=ca)

    def direct(self, path):
        s = _connect(self.up)
        s.sendall(_request(path))
        return s

    def proxy(self, path):
        s = _connect(self.fwd)
        s.sendall(_request(f"http://bench.test{path}"))
        return s

    def tunnel(self, path):
        s = _connect(self.fwd)
        s.sendall(b"CONNECT bench.test:80 HTTP/1.1\r\nHost: bench.test:80\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        s.sendall(_request(path))
        return s

    def direct_tls(self, path):
        s = self.ctx.wrap_socket(_connect(self.tls), server_hostname="localhost")
        s.sendall(_request(path, "localhost"))
        return s

    def route(self, path):
        s = _connect(self.fwd)
        s.sendall(_request(f"/_upstream/anthropic{path}", "127.0.0.1"))
        return s


def timed_get(send, path) -> float:
    t0 = time.perf_counter()
    s = send(path)
    data = _read_all(s)
    s.close()
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(b"ok"):
        raise RuntimeError(f"bad response: {data[:200]!r}")
    return time.perf_counter() - t0


def first_byte(send, path) -> float:
    t0 = time.perf_counter()
    s = send(path)
    buf = b""
    while True:
        buf += s.recv(65536)
        end = buf.find(b"\r\n\r\n")
        if end != -1 and len(buf) > end + 4 + 4:   # the first chunk's size line and a byte
            break
    elapsed = time.perf_counter() - t0
    _read_all(s)
    s.close()
    return elapsed


def stream_lags(send, path, lags: list) -> None:
    s = send(path)
    buf = b""
    head_done = False
    while True:
        data = s.recv(65536)
        if not data:
            break
        now = time.monotonic_ns()
        buf += data
        if not head_done:
            end = buf.find(b"\r\n\r\n")
            if end == -1:
                continue
            buf, head_done = buf[end + 4:], True
        while True:   # parse complete chunks
            line_end = buf.find(b"\r\n")
            if line_end == -1:
                break
            size = int(buf[:line_end], 16)
            if len(buf) < line_end + 2 + size + 2:
                break
            chunk = buf[line_end + 2:line_end + 2 + size]
            buf = buf[line_end + 4 + size:]
            if size:
                lags.append((now - int(chunk.split(b"\n", 1)[0])) / 1e6)
    s.close()


def bulk(send, path, sizes: list) -> None:
    s = send(path)
    n = 0
    while data := s.recv(1 << 18):
        n += len(data)
    s.close()
    sizes.append(n)


def pairs(paths, gate_fn, direct_fn, path, n, warmup=30):
    for _ in range(warmup):
        timed_get(gate_fn, path), timed_get(direct_fn, path)
    g, d = [], []
    for _ in range(n):
        g.append(timed_get(gate_fn, path))
        d.append(timed_get(direct_fn, path))
    return [x * 1000 for x in g], [x * 1000 for x in d]


def concurrent(fn, send, path, n):
    out: list = []
    threads = [threading.Thread(target=fn, args=(send, path, out)) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--think-ms", type=int, default=20)
    ap.add_argument("--bulk-mib", type=int, default=16)
    ap.add_argument("--upstream", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream:
        serve_upstream(*args.upstream)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bb-bench-gate-"))
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONPATH": str(C.ROOT)}
    try:
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        up = subprocess.Popen([sys.executable, __file__, "--upstream", str(cert), str(key)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        procs.append(up)
        up_port, tls_port = map(int, up.stdout.readline().split())
        sock = tmp / "state" / "egress.sock"
        sock.parent.mkdir()
        gate = subprocess.Popen([sys.executable, "-c", GATE_SCRIPT, str(sock), str(up_port), str(tls_port),
                                 str(cert)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        procs.append(gate)
        if gate.stdout.readline().strip() != "ready":
            raise RuntimeError("the gate did not start")
        fwd_port = C.free_port()
        fwd = subprocess.Popen([sys.executable, "-I", str(C.ROOT / "bot_bottle" / "gate" / "forwarder.py"),
                                "--port", str(fwd_port), "--socket", str(sock), "--", "sleep", "3600"],
                               start_new_session=True)
        procs.append(fwd)
        deadline = time.monotonic() + 10
        while True:
            try:
                _connect(fwd_port).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        p = Paths(up_port, tls_port, fwd_port, str(cert))
        print(f"# egress gate benchmark — {C.machine()}")
        ok = True

        print(f"\n## per request (new connection each, n={args.requests}), ms")
        print(f"{'path':<34}{'p50':>8}{'p99':>8}{'direct p50':>12}{'added p50':>11}{'ratio':>7}")
        for name, gate_fn, direct_fn in [("plain HTTP proxy request", p.proxy, p.direct),
                                         ("CONNECT tunnel + request", p.tunnel, p.direct),
                                         ("provider route (key, TLS upstream)", p.route, p.direct_tls)]:
            g, d = pairs(p, gate_fn, direct_fn, "/small", args.requests)
            added = C.median(g) - C.median(d)
            ok &= added <= 2.0
            print(f"{name:<34}{C.median(g):8.2f}{C.percentile(g, 99):8.2f}{C.median(d):12.2f}"
                  f"{added:11.2f}{C.median(g) / C.median(d):7.2f}  {C.verdict(added <= 2.0)} (≤ 2 ms)")

        print("\n## time to first body byte of a streamed response, ms (median of 100)")
        for think in (0, args.think_ms):
            path = f"/stream?think_ms={think}&chunks=3"
            g = [first_byte(p.proxy, path) * 1000 for _ in range(100)]
            d = [first_byte(p.direct, path) * 1000 for _ in range(100)]
            ratio = C.median(g) / C.median(d)
            judged = think == args.think_ms
            ok &= ratio <= 1.2 or not judged
            print(f"upstream thinks {think:>3} ms: gate {C.median(g):7.2f}  direct {C.median(d):7.2f}  "
                  f"ratio {ratio:5.2f}  " + (C.verdict(ratio <= 1.2) + " (≤ 1.2×)" if judged else "(shown)"))

        n = args.streams
        print(f"\n## {n} concurrent streams through one gate (200 chunks of 256 B, 5 ms apart)")
        path = "/stream?chunks=200&gap_ms=5&size=256"
        lag_g, wall_g = concurrent(stream_lags, p.proxy, path, n)
        lag_d, wall_d = concurrent(stream_lags, p.direct, path, n)
        complete = len(lag_g) == len(lag_d) == n * 200
        ok &= complete
        print(f"chunk lag ms: gate p50 {C.median(lag_g):.2f} p99 {C.percentile(lag_g, 99):.2f} · direct p50 "
              f"{C.median(lag_d):.2f} p99 {C.percentile(lag_d, 99):.2f} · wall {wall_g:.2f} s vs {wall_d:.2f} s "
              f"({wall_g / wall_d:.2f}×) · chunks {len(lag_g)}/{n * 200}  {C.verdict(complete)}")
        path = f"/bulk?bytes={args.bulk_mib << 20}"
        got_g, t_g = concurrent(bulk, p.proxy, path, n)
        got_d, t_d = concurrent(bulk, p.direct, path, n)
        mib_g, mib_d = sum(got_g) / (1 << 20) / t_g, sum(got_d) / (1 << 20) / t_d
        print(f"bulk: {n} × {args.bulk_mib} MiB: gate {mib_g:.0f} MiB/s, direct {mib_d:.0f} MiB/s "
              f"({mib_g / mib_d:.2f}×)")
        print(f"\noverall: {C.verdict(ok)}")
        return 0 if ok else 1
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                if proc.stdin:
                    proc.stdin.close()
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc is procs[-1] else proc.terminate()
                except ProcessLookupError:
                    pass
                proc.wait(10)
            for f in (proc.stdout,):
                if f:
                    f.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
