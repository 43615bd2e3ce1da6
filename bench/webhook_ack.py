"""Benchmark: how fast `POST /webhook` acknowledges signed Gitea deliveries, against a minimal
stdlib baseline, and whether 50 bottle launches in flight slow the acknowledgement down.

Owns one measurement, run by hand (not in CI):
1. a baseline server in a subprocess (`--serve-baseline PORT`): `ThreadingHTTPServer`,
   HTTP/1.1 keep-alive, read the body, HMAC-SHA256 + `compare_digest`, answer 200 — nothing
   durable. It gets the same listen backlog (128) and TCP_NODELAY as ours so neither side
   pays Nagle delays;
2. `python -m bot_bottle.orchestrator run` (a subprocess; fake Gitea, fake core CLI), whose
   202 means the delivery is in SQLite (WAL, synchronous=FULL);
3. each at 1 and 16 concurrent senders (threads, one keep-alive `http.client` connection
   each; `--reps` blocks alternating between baseline and ours, pooled), with distinct `issue_comment` bodies (~8 KB, all new, none a duplicate) signed
   like Gitea signs them; reported as req/s, p50, p99 and our/baseline ratios;
4. how many stored deliveries the dispatcher still has to process after those bursts, and
   how fast it works them off once the senders stop (acknowledged is not yet acted on);
5. a second, fresh orchestrator with FORGE_MAX_CONCURRENT_RUNS=50 whose fake bottles sleep for
   `--bottle-sleep` seconds: 50 launch-triggering `issues`/`issue_assign` deliveries, then the
   16-sender measurement while they start ("storm", compared with one block on the first
   orchestrator right after it) and, once all 50 run, `--reps` blocks alternating between
   the first orchestrator (no bottles) and the second (50 bottles running), compared pooled.

Targets printed PASS/FAIL: our p99 ≤ 25 ms at 16 senders; our throughput ≥ 0.5× baseline at
16 senders; p99 with launches in flight within ±20% of p99 without.

    python3 bench/webhook_ack.py [--requests 1000] [--per-sender 250] [--reps 3]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from bot_bottle.demo_support.fake_gitea import gitea_json  # noqa: E402
from bot_bottle.demo_support.fake_gitea_payloads import comment_event, issue_event  # noqa: E402


# ---- the baseline server (runs in its own process) ----------------------------------------

class _BaselineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    secret = b""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sig = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(sig, self.headers.get("X-Gitea-Signature", ""))
        out = b'{"status": "ok"}' if ok else b'{"status": "error"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve_baseline(port: int) -> None:
    _BaselineHandler.secret = C.SECRET.encode()
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", port), _BaselineHandler)
    server.daemon_threads = True
    server.serve_forever()


def start_baseline() -> tuple[subprocess.Popen, int]:
    port = C.free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(port)],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if C.get(port, "/", timeout=1.0)[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("baseline server did not start")


# ---- load ------------------------------------------------------------------------------------

class Deliveries:
    """Distinct signed `issue_comment` deliveries built from the fake Gitea's payload shape."""

    def __init__(self, gitea) -> None:
        n = gitea.add_issue(C.OWNER, C.REPO, "Benchmark target", "An issue with no run.")
        cid = gitea.add_comment(C.OWNER, C.REPO, n, "first", C.HUMAN)
        self._template = comment_event(gitea, C.OWNER, C.REPO, n, cid, C.HUMAN)
        self._seq = 0

    def make(self, count: int) -> list[tuple[bytes, dict]]:
        out = []
        for _ in range(count):
            self._seq += 1
            payload = copy.deepcopy(self._template)
            payload["comment"]["id"] = 10_000_000 + self._seq
            payload["comment"]["body"] = f"benchmark comment {self._seq} {uuid.uuid4()}"
            body = gitea_json(payload)
            out.append((body, C.gitea_headers("issue_comment", "issue_comment", body)))
        return out


def blast(port: int, senders: int, work: list[tuple[bytes, dict]]) -> dict:
    """`senders` threads, each with one keep-alive connection, send their share of `work`."""
    shares = [work[i::senders] for i in range(senders)]
    lat: list[list[float]] = [[] for _ in range(senders)]
    bad: list[int] = [0] * senders
    barrier = threading.Barrier(senders + 1)

    def sender(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        barrier.wait()
        for body, headers in shares[i]:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/webhook", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            lat[i].append(time.perf_counter() - t0)
            if not 200 <= status < 300:
                bad[i] += 1
        conn.close()

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(senders)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    flat = [x for xs in lat for x in xs]
    return {"n": len(flat), "errors": sum(bad), "wall": wall, "rps": len(flat) / wall,
            "p50": C.percentile(flat, 50) * 1000, "p99": C.percentile(flat, 99) * 1000,
            "lat": flat}


def measure(port: int, senders: int, total: int, reps: int, deliveries: Deliveries) -> dict:
    """`reps` runs of `total` requests; latencies pooled, throughput = total / summed wall."""
    blast(port, senders, deliveries.make(min(200, total)))  # warm-up: connections, imports
    return pooled([blast(port, senders, deliveries.make(total)) for _ in range(reps)])


def pooled(runs: list[dict]) -> dict:
    flat = [x for r in runs for x in r["lat"]]
    wall = sum(r["wall"] for r in runs)
    return {"n": len(flat), "errors": sum(r["errors"] for r in runs), "rps": len(flat) / wall,
            "p50": C.percentile(flat, 50) * 1000, "p99": C.percentile(flat, 99) * 1000}


def line(name: str, r: dict) -> str:
    return (f"  {name:<34} {r['n']:>6} req  {r['rps']:>8.0f} req/s  p50 {r['p50']:>7.2f} ms  "
            f"p99 {r['p99']:>7.2f} ms  errors {r['errors']}")


def launch(gitea, port: int, count: int) -> None:
    for i in range(count):
        n = gitea.add_issue(C.OWNER, C.REPO, f"Benchmark launch {i}", "Please sleep.",
                            labels=(f"bot-bottle:{C.AGENT}",), assignees=(C.AGENT_LOGIN,))
        body = gitea_json(issue_event(gitea, C.OWNER, C.REPO, n, "assigned", C.HUMAN))
        status, answer = C.post(port, body, C.gitea_headers("issues", "issue_assign", body))
        if status != 202:
            raise RuntimeError(f"launch delivery answered {status}: {answer[:200]!r}")


def wait_running(orch: C.Orchestrator, count: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        running = sum(1 for r in orch.runs() if r["state"] == "running")
        if running >= count:
            return time.monotonic() - start
        time.sleep(0.2)
    states = {}
    for r in orch.runs():
        states[r["state"]] = states.get(r["state"], 0) + 1
    raise RuntimeError(f"only {states} after {timeout}s; log: {orch.log_tail()}")


def pending(orch: C.Orchestrator) -> int:
    """Stored deliveries the dispatcher has not processed yet (from /metrics)."""
    status, body = C.get(orch.port, "/metrics")
    for ln in body.decode().splitlines():
        if ln.startswith('bot_bottle_deliveries_total{outcome="pending"}'):
            return int(float(ln.split()[-1]))
    return 0


def drain_rate(orch: C.Orchestrator, seconds: float) -> tuple[int, float]:
    """The backlog now and how many deliveries per second the dispatcher works off."""
    before = pending(orch)
    time.sleep(seconds)
    after = pending(orch)
    return before, (before - after) / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--requests", type=int, default=1000, help="requests per rep at 1 sender")
    p.add_argument("--per-sender", type=int, default=250, help="requests per sender per rep at 16")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--launches", type=int, default=50)
    p.add_argument("--log-level", default="INFO",
                   help="BOT_BOTTLE_LOG_LEVEL of the orchestrators (INFO = the default)")
    p.add_argument("--skip-launches", action="store_true")
    p.add_argument("--bottle-sleep", type=float, default=300.0,
                   help="seconds each fake bottle sleeps (must outlast the measurement)")
    args = p.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0

    print(f"webhook ack benchmark — {C.machine()}")
    gitea = C.start_fake_gitea()
    home = C.make_home()
    home_b = C.make_home(fake_cli_sleep=args.bottle_sleep)
    base_proc, base_port = start_baseline()
    orch = C.Orchestrator(home, gitea.url, log_level=args.log_level)
    orch_b = C.Orchestrator(home_b, gitea.url, max_runs=args.launches, log_level=args.log_level)
    results: dict[str, dict] = {}
    try:
        orch.start()
        deliveries = Deliveries(gitea)
        for senders, total in ((1, args.requests), (16, 16 * args.per_sender)):
            for port in (base_port, orch.port):  # warm-up: connections, lazy imports
                blast(port, senders, deliveries.make(min(200, total)))
            base_runs, our_runs = [], []
            for _ in range(args.reps):  # alternating blocks: outside load hits both alike
                base_runs.append(blast(base_port, senders, deliveries.make(total)))
                our_runs.append(blast(orch.port, senders, deliveries.make(total)))
            results[f"base{senders}"] = pooled(base_runs)
            results[f"ours{senders}"] = pooled(our_runs)
            print(line(f"baseline, {senders} sender(s)", results[f"base{senders}"]), flush=True)
            print(line(f"orchestrator, {senders} sender(s)", results[f"ours{senders}"]), flush=True)
        backlog, rate = drain_rate(orch, 10.0)
        print(f"  dispatcher after the bursts: {backlog} stored deliveries not yet processed, "
              f"worked off at {rate:.0f}/s when idle")

        if not args.skip_launches:
            # launches go to a second, fresh orchestrator B (FORGE_MAX_CONCURRENT_RUNS =
            # launches): A's backlog would keep them waiting behind thousands of comments.
            # A stays up, and A and B are then measured in alternating blocks, so that load
            # from elsewhere on the machine hits both alike.
            total16 = 16 * args.per_sender
            orch_b.start()
            measure(orch_b.port, 16, 200, 1, deliveries)  # warm-up, then let it drain
            while pending(orch_b):
                time.sleep(0.2)
            launch(gitea, orch_b.port, args.launches)
            results["storm"] = blast(orch_b.port, 16, deliveries.make(total16))
            print(line(f"B, 16, {args.launches} launches starting", results["storm"]), flush=True)
            results["storm_ref"] = blast(orch.port, 16, deliveries.make(total16))
            print(line("A, 16, right after", results["storm_ref"]), flush=True)
            took = wait_running(orch_b, args.launches, timeout=120)
            print(f"  ({args.launches} runs in state running {took:.1f}s after the storm)")
            a_runs, b_runs = [], []
            for _ in range(args.reps):
                a_runs.append(blast(orch.port, 16, deliveries.make(total16)))
                b_runs.append(blast(orch_b.port, 16, deliveries.make(total16)))
            results["steady_ref"] = pooled(a_runs)
            results["steady"] = pooled(b_runs)
            print(line("A, 16, no bottles (alternating)", results["steady_ref"]), flush=True)
            print(line(f"B, 16, {args.launches} bottles running (alt.)", results["steady"]), flush=True)
            still = sum(1 for r in orch_b.runs() if r["state"] == "running")
            print(f"  ({still} runs still running on B after the measurement)")
    finally:
        orch.stop()
        orch_b.stop()
        base_proc.terminate()
        base_proc.wait()
        gitea.stop()
        C.remove_home(home)
        C.remove_home(home_b)

    b1, o1, b16, o16 = (results[k] for k in ("base1", "ours1", "base16", "ours16"))
    print("\nratios (orchestrator / baseline):")
    for name, b, o in (("1 sender", b1, o1), ("16 senders", b16, o16)):
        print(f"  {name:<11} throughput {o['rps'] / b['rps']:.2f}x   p50 {o['p50'] / b['p50']:.2f}x"
              f"   p99 {o['p99'] / b['p99']:.2f}x")
    have_launches = "steady" in results
    if have_launches:
        storm_ratio = results["storm"]["p99"] / results["storm_ref"]["p99"]
        steady_ratio = results["steady"]["p99"] / results["steady_ref"]["p99"]
        print(f"  p99 with launches (B) / without (A, measured next to it): starting "
              f"{storm_ratio:.2f}x, running {steady_ratio:.2f}x")
    print("\ntargets:")
    print(f"  {C.verdict(o16['p99'] <= 25.0)}  durable ack p99 at 16 senders ≤ 25 ms: {o16['p99']:.2f} ms")
    ratio = o16["rps"] / b16["rps"]
    print(f"  {C.verdict(ratio >= 0.5)}  throughput ≥ 0.5× baseline at 16 senders: {ratio:.2f}×")
    if have_launches:
        print(f"  {C.verdict(0.8 <= steady_ratio <= 1.2)}  p99 with {args.launches} bottles "
              f"running within ±20%: {steady_ratio:.2f}×")
        print(f"  {C.verdict(0.8 <= storm_ratio <= 1.2)}  p99 while {args.launches} launches "
              f"start within ±20%: {storm_ratio:.2f}×")
    errors = sum(r["errors"] for r in results.values())
    if errors:
        print(f"  note: {errors} non-2xx answers or connection errors in total")
    print(json.dumps({k: {kk: round(vv, 3) for kk, vv in v.items() if kk != "lat"}
                      for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
