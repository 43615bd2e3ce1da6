"""The optional phases of `webhook_vs_peer.py` (issue 13), each on a fresh orchestrator of its
own: `rss_phase` (VmRSS after 100k deliveries, `--rss`) and `storm_phase` (ack p99 while 50
fake bottles start, against the same orchestrator idle just before, `--storm`). `bench` is
the script's `Bench`: its temp root, fake Gitea, template, block tags and `block`.
"""

from __future__ import annotations

import os
import time

import _common as C

from bot_bottle.demo_support.fake_gitea import gitea_json
from bot_bottle.demo_support.fake_gitea_payloads import issue_event

MB = 1_000_000 / 1024  # KiB per MB (10^6 bytes)


def rss_phase(bench, total: int) -> tuple[bool, dict]:
    """A fresh orchestrator: VmRSS idle, then after `total` deliveries (16 senders, blocks of
    10k), once the dispatcher has processed them all."""
    orch = C.Orchestrator(C.make_home(parent=bench.root), bench.gitea.url)
    try:
        orch.start()
        time.sleep(1.0)
        idle = C.rss_kib(orch.proc.pid)
        t0 = time.monotonic()
        sent, bad = 0, 0
        while sent < total:
            n = min(10_000, total - sent)
            r = C.loadgen(orch.port, "/webhook", 16, n, bench.template, bench.tag())
            bad += r["errors"] + sum(v for k, v in r["statuses"].items() if k != "202")
            sent += n
        C.drain(orch)
        took = time.monotonic() - t0
        after = C.rss_kib(orch.proc.pid)
        threads = len(os.listdir(f"/proc/{orch.proc.pid}/task"))
    finally:
        orch.stop()
    print(f"\nRSS of `run` (one fresh orchestrator, {total:,} deliveries at 16 senders in "
          f"{took:.0f} s, all processed{f', {bad} not 202' if bad else ''}):")
    print(f"  idle after start   VmRSS {idle['VmRSS'] / MB:5.1f} MB")
    print(f"  after {total:,}  VmRSS {after['VmRSS'] / MB:5.1f} MB  (peak VmHWM "
          f"{after['VmHWM'] / MB:.1f} MB, {threads} threads)")
    v = after["VmRSS"] / MB
    print(f"  {C.verdict(v <= 45)}  RSS ≤ 45 MB after {total:,} deliveries: {v:.1f} MB")
    return v <= 45 and not bad, {"idle_kib": idle, "after_kib": after}


def storm_phase(bench, rounds: int, launches: int, n: int) -> tuple[bool, list]:
    """Per round a fresh orchestrator (FORGE_MAX_CONCURRENT_RUNS = launches, fake bottles
    that sleep): a 16-sender block idle, then `launches` launch deliveries and at once the
    same block while their bottles start."""
    out = []
    print(f"\nack p99 while {launches} bottles start (16 senders, {n} requests a block):")
    for i in range(rounds):
        orch = C.Orchestrator(C.make_home(fake_cli_sleep=600.0, parent=bench.root),
                              bench.gitea.url, max_runs=launches)
        try:
            orch.start()
            pid = orch.proc.pid
            C.loadgen(orch.port, "/webhook", 16, bench.args.warmup, bench.template, bench.tag())
            idle = bench.block("ours", pid, orch.port, 16, n, orch)
            C.drain(orch)
            t0 = time.monotonic()
            for k in range(launches):
                num = bench.gitea.add_issue(C.OWNER, C.REPO, f"Storm {i}-{k}", "Please sleep.",
                                            labels=(f"bot-bottle:{C.AGENT}",),
                                            assignees=(C.AGENT_LOGIN,))
                body = gitea_json(issue_event(bench.gitea, C.OWNER, C.REPO, num, "assigned",
                                              C.HUMAN))
                status, _ = C.post(orch.port, body, C.gitea_headers("issues", "issue_assign",
                                                                    body))
                if status != 202:
                    raise RuntimeError(f"launch delivery answered {status}")
            storm = C.loadgen(orch.port, "/webhook", 16, n, bench.template, bench.tag())
            storm_end = time.monotonic() - t0
            running, states = wait_running(orch, launches, 120.0)
            all_up = states.get("running", 0) >= launches
            trouble = [] if all_up else problems(orch)
        finally:
            orch.stop()
        ratio = storm["p99_ms"] / idle["p99_ms"]
        out.append((idle, storm, ratio))
        print(f"  round {i + 1}: idle {idle['rps']:.0f} req/s p99 {idle['p99_ms']:.2f} ms;  "
              f"starting {storm['rps']:.0f} req/s p99 {storm['p99_ms']:.2f} ms  ({ratio:.2f}×; "
              f"block ended {storm_end:.1f} s after the first launch, " + (
                  f"all {launches} running after {running:.1f} s)" if all_up else
                  f"NOT all running after {running:.0f} s: {states})"))
        for line in trouble:
            print(f"    log: {line[:300]}")
    ratio = C.med(r for _, _, r in out)
    print(f"  {C.verdict(ratio <= 1.5)}  p99 while {launches} bottles start ≤ 1.5× idle: "
          f"median {ratio:.2f}×")
    return ratio <= 1.5, out


def wait_running(orch: C.Orchestrator, count: int, timeout: float) -> tuple[float, dict]:
    """Seconds until `count` runs are running (or `timeout`), and the runs by state then."""
    start = time.monotonic()
    while True:
        states: dict[str, int] = {}
        for r in orch.runs():
            states[r["state"]] = states.get(r["state"], 0) + 1
        if states.get("running", 0) >= count or time.monotonic() - start > timeout:
            return time.monotonic() - start, states
        time.sleep(0.2)


def problems(orch: C.Orchestrator, limit: int = 5) -> list[str]:
    """The orchestrator log's last WARNING/ERROR lines (its INFO lines are per delivery)."""
    try:
        lines = orch.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))
            ][-limit:]
