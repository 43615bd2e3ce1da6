"""Benchmark: resident memory of `python -m bot_bottle.orchestrator run`, idle and with 200
tracked runs, against a bare interpreter measured in the same run.

Owns one measurement, run by hand (not in CI). VmRSS (now) and VmHWM (peak) come from
/proc/<pid>/status of the orchestrator process alone — the fake bottles it starts are
separate processes and are not counted. Cases:

- baseline: `python -c "import time; time.sleep(9)"`;
- idle: a fresh store, right after `/healthz` answers, and again after each page
  (`/`, `/runs`, `/metrics`) has been served once and one delivery stored;
- 200 stored runs: 200 frozen runs written into the store (through `SqliteRunStore`) before
  start, after the pages have been served;
- 200 live runs: 200 launch deliveries with FORGE_MAX_CONCURRENT_RUNS=200 and fake bottles
  that sleep, measured once all 200 are `running` (one worker thread and one child process
  pipe each) and the pages served.

Targets printed PASS/FAIL: ≤ 40 MB idle; ≤ 80 MB with 200 runs (both 200-run cases).

    python3 bench/rss.py [--runs 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from bot_bottle.orchestrator.model import RunState  # noqa: E402
from bot_bottle.orchestrator.store import SqliteRunStore  # noqa: E402
from bot_bottle.demo_support.fake_gitea import gitea_json  # noqa: E402
from bot_bottle.demo_support.fake_gitea_payloads import issue_event  # noqa: E402

MB = 1_000_000 / 1024  # KiB per MB (targets are in MB = 10^6 bytes; MiB printed too)


def fmt(m: dict[str, int]) -> str:
    return (f"VmRSS {m['VmRSS'] / MB:6.1f} MB ({C.mib(m['VmRSS']):5.1f} MiB)   "
            f"VmHWM {m['VmHWM'] / MB:6.1f} MB")


def baseline() -> dict[str, int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(9)"])
    try:
        time.sleep(1.0)
        return C.rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def touch_pages(orch: C.Orchestrator, gitea, deliver: bool = True) -> None:
    for path in ("/", "/runs", "/runs?all=1", "/metrics", "/healthz"):
        status, _ = C.get(orch.port, path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    if deliver:
        n = gitea.add_issue(C.OWNER, C.REPO, "RSS probe", "no label, no run")
        body = gitea_json(issue_event(gitea, C.OWNER, C.REPO, n, "opened", C.HUMAN))
        status, _ = C.post(orch.port, body, C.gitea_headers("issues", "issues", body))
        if status != 202:
            raise RuntimeError(f"probe delivery answered {status}")
    time.sleep(1.0)


def seed_frozen(home: Path, count: int) -> None:
    now = time.time()
    with SqliteRunStore(home / "orchestrator.db") as store:
        for i in range(count):
            run = store.create_run(C.OWNER, C.REPO, 100_000 + i, C.AGENT, ("bench",),
                                   RunState.STARTING, f"rss-token-{i}", now)
            store.update_run(run.id, now=now, slug=f"{C.OWNER}-{C.REPO}-{100_000 + i}")
            store.transition(run.id, RunState.RUNNING, now=now, reason="started")
            store.transition(run.id, RunState.FROZEN, now=now, reason="freeze",
                             last_done_status="done", last_done_summary="Opened a PR.")


def launch(orch: C.Orchestrator, gitea, count: int, timeout: float = 180.0) -> float:
    for i in range(count):
        n = gitea.add_issue(C.OWNER, C.REPO, f"RSS launch {i}", "Please sleep.",
                            labels=(f"bot-bottle:{C.AGENT}",), assignees=(C.AGENT_LOGIN,))
        body = gitea_json(issue_event(gitea, C.OWNER, C.REPO, n, "assigned", C.HUMAN))
        status, answer = C.post(orch.port, body, C.gitea_headers("issues", "issue_assign", body))
        if status != 202:
            raise RuntimeError(f"launch answered {status}: {answer[:200]!r}")
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if sum(1 for r in orch.runs() if r["state"] == "running") >= count:
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"{count} runs not running after {timeout}s; log: {orch.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--bottle-sleep", type=float, default=600.0)
    args = p.parse_args(argv)
    print(f"RSS benchmark — {C.machine()}")
    res: dict[str, dict[str, int]] = {}
    res["baseline"] = baseline()
    print(f"  {'python -c sleep':<30} {fmt(res['baseline'])}", flush=True)

    gitea = C.start_fake_gitea()
    homes = [C.make_home(), C.make_home(), C.make_home(fake_cli_sleep=args.bottle_sleep)]
    try:
        with C.Orchestrator(homes[0], gitea.url) as orch:
            time.sleep(2.0)
            res["idle"] = C.rss_kib(orch.proc.pid)
            print(f"  {'run, idle (just started)':<30} {fmt(res['idle'])}", flush=True)
            touch_pages(orch, gitea)
            res["idle_warm"] = C.rss_kib(orch.proc.pid)
            print(f"  {'run, idle (pages served)':<30} {fmt(res['idle_warm'])}", flush=True)

        seed_frozen(homes[1], args.runs)
        with C.Orchestrator(homes[1], gitea.url) as orch:
            touch_pages(orch, gitea)
            res["stored"] = C.rss_kib(orch.proc.pid)
            print(f"  {f'run, {args.runs} frozen runs':<30} {fmt(res['stored'])}", flush=True)

        with C.Orchestrator(homes[2], gitea.url, max_runs=args.runs) as orch:
            took = launch(orch, gitea, args.runs)
            touch_pages(orch, gitea, deliver=False)
            res["live"] = C.rss_kib(orch.proc.pid)
            threads = len(list(Path(f"/proc/{orch.proc.pid}/task").iterdir()))
            print(f"  {f'run, {args.runs} running runs':<30} {fmt(res['live'])}   "
                  f"({threads} threads; all running after {took:.1f}s)", flush=True)
    finally:
        gitea.stop()
        for home in homes:
            C.remove_home(home)

    base = res["baseline"]["VmRSS"]
    print("\nratios (VmRSS / bare interpreter):")
    for key, name in (("idle", "idle"), ("idle_warm", "idle, pages served"),
                      ("stored", f"{args.runs} frozen"), ("live", f"{args.runs} running")):
        print(f"  {name:<22} {res[key]['VmRSS'] / base:5.2f}x   "
              f"(+{(res[key]['VmRSS'] - base) / MB:.1f} MB)")
    print("\ntargets (VmRSS; peak VmHWM in brackets):")
    idle = max(res["idle"]["VmRSS"], res["idle_warm"]["VmRSS"]) / MB
    print(f"  {C.verdict(idle <= 40)}  idle ≤ 40 MB: {idle:.1f} MB "
          f"[{res['idle_warm']['VmHWM'] / MB:.1f}]")
    for key, name in (("stored", "frozen"), ("live", "running")):
        v = res[key]["VmRSS"] / MB
        print(f"  {C.verdict(v <= 80)}  {args.runs} {name} runs ≤ 80 MB: {v:.1f} MB "
              f"[{res[key]['VmHWM'] / MB:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
