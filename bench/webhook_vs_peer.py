"""Benchmark (issue 13): webhook acks of the orchestrator against a Go peer and naive Python.

How fast `bot-bottle-orchestrator run` acknowledges signed Gitea deliveries, against a Go
webhook receiver and a naive durable Python server, measured in the same run.

Owns the "Must show" measurement, run by hand (not in CI). Servers, each a subprocess in its
own process group, unpinned (no CPU affinity set; `pinned` aside), started afresh in
every round:
- `peer`: `../shared/bench/webhook-peer` (adnanh/webhook; checks the HMAC, parses the JSON,
  answers 200; path /hooks/gitea);
- `naive`: `bench/naive_durable.py` (ThreadingHTTPServer, HMAC, json.loads, durable INSERT:
  WAL, synchronous=FULL, writer thread with group commit; 200);
- `stdlib` (only with `--only`): the same with `--hmac-only` (nothing parsed or stored);
- `ours`: `python -m bot_bottle.orchestrator run` on a fresh home (fake core CLI, an
  in-process fake Gitea), whose 202 means the delivery is in SQLite;
- `stored` (with `--stored N`): the same on a store pre-filled once with N processed
  deliveries (`_prefill.py`), restarted each round;
- `pinned` (only with `--only`): ours on a fresh home pinned to the last CPU (`taskset`, as
  systemd's `CPUAffinity=` would), the load generator and the others left free.
Each round starts them in a rotated order; each gets a warm-up block, then `loadgen -c 16
-n N` and `loadgen -c 1` (distinct signed 8.7 KB `issue_comment` bodies from
`../shared/bench/issue_comment.template.json`, made distinct per comment for our dedupe:
`_common.distinct_template`). For ours the dispatcher's backlog is drained (polling
`/metrics`) before each block, and `GET /metrics` is timed: the first scrape after start
and the median of 5 later ones. Per round a table; then the medians over rounds, the ratios
and PASS/FAIL for the issue's targets. `--rss`: VmRSS of a fresh orchestrator after 100k
deliveries. `--storm`: ack p99 while 50 fake bottles start, against the same orchestrator
idle just before.

    python3 bench/webhook_vs_peer.py [--rounds 3] [--requests 10000] [--stored 1000000]
                                     [--rss] [--storm] [--only peer,naive,ours]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _phases  # noqa: E402
import _prefill  # noqa: E402


NAMES = ("peer", "stdlib", "naive", "ours", "stored", "pinned")
PATHS = {"peer": "/hooks/gitea"}  # the rest: /webhook
MB = _phases.MB


class Bench:
    """The run's shared state: its temp root, the template, the fake Gitea, what is running."""

    def __init__(self, args) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="bot-bottle-vs-peer-"))
        self.template = C.distinct_template(self.root / "template.json")
        self.gitea = C.start_fake_gitea()
        self.stored_home: Path | None = None
        self._seq = 0

    def close(self) -> None:
        self.gitea.stop()
        C.remove_home(self.root)

    def tag(self) -> str:
        self._seq += 1
        return f"b{self._seq}"

    # ---- servers -----------------------------------------------------------------------

    def start(self, name: str):
        """(the started server, its pid, its port)."""
        if name in ("ours", "stored", "pinned"):
            home = self.stored_home if name == "stored" else C.make_home(parent=self.root)
            cpu = max(os.sched_getaffinity(0)) if name == "pinned" else None
            orch = C.Orchestrator(home, self.gitea.url, max_runs=self.args.max_runs, cpu=cpu)
            try:
                orch.start(timeout=120.0)
            except BaseException:
                orch.stop()
                raise
            return orch, orch.proc.pid, orch.port
        port = C.free_port()
        log = self.root / f"{name}.log"
        if name == "peer":
            hooks = self.root / "hooks.json"
            if not hooks.exists():
                hooks.touch(mode=0o600)
                hooks.write_text(json.dumps([{
                    "id": "gitea", "execute-command": "/nonexistent", "http-methods": ["POST"],
                    "trigger-rule-mismatch-http-response-code": 401,
                    "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": C.SECRET,
                                               "parameter": {"source": "header",
                                                             "name": "X-Gitea-Signature"}}}}]))
            argv = [str(C.PEER), "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)]
            env = None
        else:
            db = Path(tempfile.mkdtemp(prefix="naive-", dir=self.root)) / "naive.db"
            argv = [sys.executable, str(Path(__file__).with_name("naive_durable.py")),
                    "--port", str(port)] + (["--hmac-only"] if name == "stdlib" else
                                            ["--db", str(db)])
            env = {**os.environ, "BENCH_SECRET": C.SECRET}
        svc = C.Service(argv, port, log, env=env).start()
        return svc, svc.proc.pid, port

    # ---- measuring ---------------------------------------------------------------------

    def block(self, name: str, pid: int, port: int, conc: int, n: int, orch=None) -> dict:
        """One loadgen block; for ours, the backlog drained before it and timed after it."""
        if orch is not None:
            C.drain(orch)
        cpu0 = C.cpu_seconds(pid)
        r = C.loadgen(port, PATHS.get(name, "/webhook"), conc, n, self.template, self.tag())
        if orch is not None:
            r["backlog"] = C.pending(orch)
            r["drain_s"] = C.drain(orch)
        r["cpu_us"] = (C.cpu_seconds(pid) - cpu0) / max(1, r["n"]) * 1e6
        want = "202" if orch is not None else "200"
        r["bad"] = r["errors"] + sum(v for k, v in r["statuses"].items() if k != want)
        return r

    def server_round(self, name: str) -> dict:
        t0 = time.monotonic()
        server, pid, port = self.start(name)
        orch = server if isinstance(server, C.Orchestrator) else None
        try:
            out: dict = {"start_s": time.monotonic() - t0}
            if orch is not None:
                out["metrics_first_ms"] = C.time_get(port, "/metrics")
            C.loadgen(port, PATHS.get(name, "/webhook"), 16, self.args.warmup, self.template,
                      self.tag())
            out["c16"] = self.block(name, pid, port, 16, self.args.requests, orch)
            out["c1"] = self.block(name, pid, port, 1, self.args.requests_1, orch)
            if orch is not None:
                out["metrics_ms"] = statistics.median(C.time_get(port, "/metrics")
                                                      for _ in range(5))
            out["rss_kib"] = C.rss_kib(pid)["VmRSS"]
            return out
        finally:
            server.stop()


def row(name: str, r: dict) -> str:
    c16, c1 = r["c16"], r["c1"]
    extra = ""
    if "metrics_ms" in r:
        extra = (f"  backlog {c16['backlog']:>5} ({c16['drain_s']:4.1f} s)  /metrics first "
                 f"{r['metrics_first_ms']:6.1f} then {r['metrics_ms']:5.1f} ms  healthy after "
                 f"{r['start_s']:4.1f} s")
    bad = c16["bad"] + c1["bad"]
    return (f"  {name:<7} {c16['rps']:>7.0f} {c16['p50_ms']:>6.2f} {c16['p99_ms']:>6.2f} "
            f"{c16['cpu_us']:>6.0f}   {c1['rps']:>6.0f} {c1['p50_ms']:>5.2f} {c1['p99_ms']:>5.2f}"
            f"  {r['rss_kib'] / MB:5.1f}{extra}" + (f"  BAD {bad}" if bad else ""))


HEADER = ("  server  --- 16 senders: req/s  p50   p99  cpu µs/req   1 sender: req/s  p50   p99"
          "  RSS MB")


def summary(results: dict[str, list[dict]], args) -> bool:
    """Medians, ratios and the targets; True if every target printed passed."""
    m = {name: {"rps16": C.med(r["c16"]["rps"] for r in rs),
                "p99_16": C.med(r["c16"]["p99_ms"] for r in rs),
                "p50_16": C.med(r["c16"]["p50_ms"] for r in rs),
                "cpu16": C.med(r["c16"]["cpu_us"] for r in rs),
                "rps1": C.med(r["c1"]["rps"] for r in rs),
                "p99_1": C.med(r["c1"]["p99_ms"] for r in rs),
                "p50_1": C.med(r["c1"]["p50_ms"] for r in rs),
                "metrics_first": C.med(r.get("metrics_first_ms") for r in rs),
                "metrics": C.med(r.get("metrics_ms") for r in rs)}
         for name, rs in results.items()}
    print(f"\nmedians over {args.rounds} rounds:")
    print("  server   16: req/s    p50    p99  cpu µs/req    1: req/s   p50   p99")
    for name, x in m.items():
        print(f"  {name:<7} {x['rps16']:>10.0f} {x['p50_16']:>6.2f} {x['p99_16']:>6.2f} "
              f"{x['cpu16']:>8.0f}   {x['rps1']:>9.0f} {x['p50_1']:>5.2f} {x['p99_1']:>5.2f}")
    ok = True

    def target(passed: bool, text: str) -> None:
        nonlocal ok
        ok = ok and passed
        print(f"  {C.verdict(passed)}  {text}")

    print("\nratios (of the medians; per round in brackets):")
    per_round = lambda a, b, key: " ".join(  # noqa: E731
        f"{x['c16'][key] / y['c16'][key]:.2f}" for x, y in zip(results[a], results[b]))
    for other in ("peer", "naive", "stdlib"):
        if "ours" in m and other in m:
            print(f"  ours / {other:<6} 16 senders throughput {m['ours']['rps16'] / m[other]['rps16']:.2f}x "
                  f"[{per_round('ours', other, 'rps')}]  p99 {m['ours']['p99_16'] / m[other]['p99_16']:.2f}x")
    if "pinned" in m and "ours" in m:
        print(f"  pinned / ours   16 senders throughput {m['pinned']['rps16'] / m['ours']['rps16']:.2f}x "
              f"[{per_round('pinned', 'ours', 'rps')}]  p99 "
              f"{m['pinned']['p99_16'] / m['ours']['p99_16']:.2f}x")
    if "stored" in m and "ours" in m:
        print(f"  stored / ours   16 senders p99 {m['stored']['p99_16'] / m['ours']['p99_16']:.2f}x "
              f"[{per_round('stored', 'ours', 'p99_ms')}]  throughput "
              f"{m['stored']['rps16'] / m['ours']['rps16']:.2f}x")
    print("\ntargets (issue 13):")
    if "ours" in m:
        o = m["ours"]
        if "peer" in m:
            ratio = o["rps16"] / m["peer"]["rps16"]
            target(ratio >= 0.5, f"16 senders: throughput ≥ 0.5× the Go peer: {ratio:.2f}× "
                   f"({o['rps16']:.0f} / {m['peer']['rps16']:.0f} req/s)")
        target(o["p99_16"] <= 20, f"16 senders: p99 ≤ 20 ms: {o['p99_16']:.2f} ms")
        target(o["p99_1"] <= 5, f"1 sender: p99 ≤ 5 ms: {o['p99_1']:.2f} ms")
        if "naive" in m:
            ratio = o["rps16"] / m["naive"]["rps16"]
            target(ratio >= 1.3, f"16 senders: throughput ≥ 1.3× the naive durable server: "
                   f"{ratio:.2f}× ({o['rps16']:.0f} / {m['naive']['rps16']:.0f} req/s)")
        if "stored" in m:
            ratio = m["stored"]["p99_16"] / o["p99_16"]
            target(ratio <= 1.2, f"{args.stored:,} stored: p99 within 1.2× of a fresh store: "
                   f"{ratio:.2f}× ({m['stored']['p99_16']:.2f} / {o['p99_16']:.2f} ms)")
            worst = max(m["stored"]["metrics_first"], m["stored"]["metrics"])
            target(worst <= 50, f"{args.stored:,} stored: GET /metrics ≤ 50 ms: first scrape "
                   f"{m['stored']['metrics_first']:.1f} ms, later {m['stored']['metrics']:.1f} ms")
    return ok


def _sigterm(*_) -> None:
    raise SystemExit(143)  # so the finally blocks stop every server and remove the temp dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--requests", type=int, default=10_000, metavar="N",
                   help="requests per 16-sender block (default 10000)")
    p.add_argument("--requests-1", type=int, default=None, metavar="N",
                   help="requests per 1-sender block (default requests / 5)")
    p.add_argument("--warmup", type=int, default=500, metavar="N", help="16-sender warm-up requests")
    p.add_argument("--only", default="", metavar="NAMES",
                   help=f"comma-separated servers among {','.join(NAMES)} "
                        "(default peer,naive,ours; stored is added by --stored)")
    p.add_argument("--stored", type=int, default=0, metavar="N",
                   help="also measure an orchestrator whose store holds N processed deliveries")
    p.add_argument("--rss", action="store_true",
                   help="VmRSS of a fresh orchestrator after --rss-deliveries deliveries")
    p.add_argument("--rss-deliveries", type=int, default=100_000, metavar="N")
    p.add_argument("--storm", action="store_true",
                   help="ack p99 while --launches fake bottles start, against idle")
    p.add_argument("--launches", type=int, default=50, metavar="N")
    p.add_argument("--storm-requests", type=int, default=3000, metavar="N",
                   help="requests per 16-sender block in --storm (default 3000)")
    p.add_argument("--max-runs", type=int, default=4, help="FORGE_MAX_CONCURRENT_RUNS")
    args = p.parse_args(argv)
    args.requests_1 = args.requests_1 or max(200, args.requests // 5)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or \
        ["peer", "naive", "ours"] + (["stored"] if args.stored else [])
    if bad := [n for n in names if n not in NAMES]:
        p.error(f"unknown server(s) {bad}; choose among {NAMES}")
    if "stored" in names and not args.stored:
        p.error("stored needs --stored N")
    if args.stored and "stored" not in names:
        names.append("stored")
    for tool in (C.LOADGEN, C.PEER):
        if not os.access(tool, os.X_OK):
            p.error(f"{tool} is missing (see ../shared/bench/README.md)")
    signal.signal(signal.SIGTERM, _sigterm)

    head = subprocess.run(["git", "-C", str(C.ROOT), "log", "-1", "--format=%h %ci"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(C.ROOT), "status", "--porcelain", "--",
                            "bot_bottle"], capture_output=True, text=True,
                           check=False).stdout.count("\n")
    print(f"webhook ack vs peer — {C.machine()}")
    print(f"  commit {head}{f' + {dirty} changed file(s) under bot_bottle/' if dirty else ''}"
          f" · started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
          f" · affinity {sorted(os.sched_getaffinity(0))} · TMPDIR {tempfile.gettempdir()}")
    print(f"  {args.rounds} rounds, {args.requests} requests at 16 senders and "
          f"{args.requests_1} at 1 per server and round, after {args.warmup} warm-up")

    bench = Bench(args)
    ok = True
    try:
        if args.stored:
            bench.stored_home = C.make_home(parent=bench.root)
            print(f"  pre-filling a store with {args.stored:,} processed deliveries ...",
                  flush=True)
            done = _prefill.prefill(bench.stored_home / "orchestrator.db", args.stored,
                                    C.TEMPLATE.read_text(encoding="utf-8"))
            print(f"  ... {done['seconds']:.0f} s, {done['bytes'] / 1e9:.2f} GB, store schema "
                  f"v{done['version']}, processed state {done['layout']}")
            if done["warning"]:
                print(f"  WARNING: {done['warning']}")
        results: dict[str, list[dict]] = {n: [] for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            print(f"\nround {rnd + 1} (order {', '.join(order)}) "
                  f"{time.strftime('%H:%M:%S', time.gmtime())}:")
            print(HEADER)
            for name in order:
                r = bench.server_round(name)
                results[name].append(r)
                print(row(name, r), flush=True)
        ok = summary(results, args)
        if args.storm:
            ok = _phases.storm_phase(bench, args.rounds, args.launches, args.storm_requests)[0] and ok
        if args.rss:
            ok = _phases.rss_phase(bench, args.rss_deliveries)[0] and ok
        bad = sum(r["c16"]["bad"] + r["c1"]["bad"] for rs in results.values() for r in rs)
        if bad:
            print(f"  note: {bad} answers were errors or not the expected status (ours 202, "
                  "others 200): see BAD in the round tables")
        print(json.dumps({n: [{k: (v if not isinstance(v, dict) else
                                   {kk: vv for kk, vv in v.items() if kk in (
                                       "rps", "p50_ms", "p99_ms", "cpu_us", "statuses",
                                       "backlog", "drain_s")})
                               for k, v in r.items()} for r in rs]
                          for n, rs in results.items()}, separators=(",", ":")))
    finally:
        bench.close()
    print(f"\n{'every target passed' if ok else 'some targets FAILED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
