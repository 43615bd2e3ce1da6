"""Benchmark: `python -m bot_bottle.orchestrator status` as a whole process with 100k runs in
the store, against two baselines measured in the same run.

Owns one measurement, run by hand (not in CI): it creates the store through the real
`SqliteRunStore` (so the schema, migrations and triggers are the shipped ones), adds a few runs
through the store's own `create_run`/`transition`, then bulk-inserts the rest with plain SQL
into the same `runs` and `op_log` tables (all live by default; `--live-fraction 0.01` for 99%
destroyed); the store's triggers render each run's ready text (`run_views`, `run_lines`) as
they go, as they would for runs made one by one. It then times, as whole processes (median of
`--reps`, after one warm-up each, stdout to /dev/null):

- `status` (live runs), `status --all` (every row) and `status --json` (live runs);
- `python -c pass` (interpreter start-up);
- `python -c "import sqlite3; sqlite3.connect(db).execute('select count(*) from runs')..."`.

Targets printed PASS/FAIL (issue 12): `status` and `status --json` ≤ 150 ms each, and both
list every live run (the table's lines and the JSON document's runs are counted).

    python3 bench/status_100k.py [--runs 100000] [--reps 5] [--importtime]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from bot_bottle.orchestrator.model import RunState  # noqa: E402
from bot_bottle.orchestrator.store import SqliteRunStore  # noqa: E402

# the floor: the live rows' columns fetched and written out unformatted
FETCH = ("import sqlite3, sys; sys.stdout.write(repr(sqlite3.connect(sys.argv[1]).execute("
         "\"SELECT id, owner, repo, issue_number, pr_number, agent, bottles, slug, state, "
         "created_at, updated_at, last_progress_at, last_done_status, last_done_summary, error "
         "FROM runs WHERE state != 'destroyed' ORDER BY id\").fetchall()))")
LIVE_MIX = (("frozen", 0.70), ("queued", 0.10), ("failed", 0.08), ("timed_out", 0.07),
            ("running", 0.05))


def fill(db: Path, total: int, live_fraction: float, ops_per_run: int) -> dict[str, int]:
    now = time.time()
    with SqliteRunStore(db) as store:  # schema + a few runs through the real API
        for i in range(3):
            run = store.create_run(C.OWNER, C.REPO, i + 1, C.AGENT, ("bench",),
                                   RunState.STARTING, f"seed-token-{i}", now)
            store.update_run(run.id, now=now, slug=f"{C.OWNER}-{C.REPO}-{i + 1}")
            store.transition(run.id, RunState.RUNNING, now=now, reason="started")
            store.transition(run.id, RunState.FROZEN, now=now, reason="freeze")
            store.transition(run.id, RunState.DESTROYED, now=now, reason="destroy")
    rng = random.Random(42)
    live = int(total * live_fraction)
    states = []
    for name, share in LIVE_MIX:
        states += [name] * int(live * share)
    states += ["destroyed"] * (total - 3 - len(states))
    rng.shuffle(states)
    rows = []
    for k, state in enumerate(states):
        number = 1000 + k
        created = now - rng.uniform(0, 180 * 86400)
        pr = number + 500_000 if state in ("frozen", "destroyed") and k % 3 else None
        done = rng.choice(("done", "blocked", "failed", "exited:1", None))
        rows.append((f"o{k % 50}", f"r{k % 7}", number, rng.choice(("claude", "codex", "pi")),
                     json.dumps(["main"]), state, created, created + 3600, f"token-{k}-{rng.random()}",
                     f"o{k % 50}-r{k % 7}-{number}", pr, created + 1800, done,
                     "Summary of the work done." if done else None, None, None))
    import sqlite3
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (owner, repo, issue_number, agent, bottles, state, created_at, "
        "updated_at, run_token, slug, pr_number, last_progress_at, last_done_status, "
        "last_done_summary, pending_prompt, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    if ops_per_run:
        ids = [r[0] for r in conn.execute("SELECT id FROM runs WHERE id > 3")]
        detail = json.dumps({"reason": "bench", "state": "frozen"})
        conn.executemany("INSERT INTO op_log (run_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                         ((i, now, "transition", detail) for i in ids for _ in range(ops_per_run)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    conn.close()
    return counts


def timed(argv: list[str], env: dict, reps: int) -> tuple[float, list[float]]:
    """Median wall time (ms) of `argv` as a whole process, after one warm-up."""
    def once() -> float:
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=str(C.ROOT), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        took = (time.perf_counter() - t0) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
        return took
    once()
    samples = [once() for _ in range(reps)]
    return C.median(samples), samples


def import_profile(env: dict, top: int = 12) -> str:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "bot_bottle.orchestrator",
                           "status"], env=env, cwd=str(C.ROOT), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for ln in done.stderr.splitlines():
        if ln.startswith("import time:") and "|" in ln and "cumulative" not in ln:
            _, cumulative, name = (p.strip() for p in ln[len("import time:"):].split("|"))
            rows.append((int(cumulative), name))
    rows.sort(reverse=True)
    return "\n".join(f"    {us / 1000:7.1f} ms  {name}" for us, name in rows[:top])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--live-fraction", type=float, default=1.0)
    p.add_argument("--ops-per-run", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--importtime", action="store_true", help="also print the slowest imports")
    args = p.parse_args(argv)

    print(f"status benchmark — {C.machine()}")
    home = Path(tempfile.mkdtemp(prefix="bot-bottle-bench-status-"))
    try:
        db = home / "orchestrator.db"
        t0 = time.perf_counter()
        counts = fill(db, args.runs, args.live_fraction, args.ops_per_run)
        print(f"  filled {sum(counts.values())} runs in {time.perf_counter() - t0:.1f}s "
              f"({os.path.getsize(db) / 2**20:.1f} MiB): {counts}")
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8",
               "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(C.ROOT)}
        py = sys.executable
        cases = [
            ("python -c pass", [py, "-c", "pass"]),
            ("python -c sqlite3 count(*)", [py, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1])"
                                            ".execute('select count(*) from runs').fetchall()", str(db)]),
            ("python fetchall live rows", [py, "-c", FETCH, str(db)]),
            ("status", [py, "-m", "bot_bottle.orchestrator", "status"]),
            ("status --json", [py, "-m", "bot_bottle.orchestrator", "status", "--json"]),
            ("status --all", [py, "-m", "bot_bottle.orchestrator", "status", "--all"]),
        ]
        results = {}
        for name, cmd in cases:
            med, samples = timed(cmd, env, args.reps)
            results[name] = med
            print(f"  {name:<28} median {med:7.1f} ms   samples "
                  + " ".join(f"{s:.1f}" for s in samples), flush=True)
        live = sum(v for k, v in counts.items() if k != "destroyed")
        lines = subprocess.run([py, "-m", "bot_bottle.orchestrator", "status"], env=env,
                               cwd=str(C.ROOT), capture_output=True, text=True).stdout.count("\n")
        doc = json.loads(subprocess.run([py, "-m", "bot_bottle.orchestrator", "status", "--json"],
                                        env=env, cwd=str(C.ROOT), capture_output=True).stdout)
        answered = lines == live + 1 and len(doc["runs"]) == live
        print(f"  (`status` printed {lines} lines, `status --json` {len(doc['runs'])} runs "
              f"(document version {doc['version']}), for {live} live runs)")
        base, count = results["python -c pass"], results["python -c sqlite3 count(*)"]
        floor = results["python fetchall live rows"]
        print("\nratios:")
        for name in ("status", "status --json", "status --all"):
            print(f"  {name:<14} {results[name] / base:5.2f}x python -c pass   "
                  f"{results[name] / count:5.2f}x sqlite3 count(*)   "
                  f"{results[name] / floor:5.2f}x fetchall   "
                  f"(+{results[name] - base:.1f} ms over interpreter start-up)")
        print("\ntargets:")
        print(f"  {C.verdict(answered)}  every live run listed by both")
        for name in ("status", "status --json"):
            print(f"  {C.verdict(answered and results[name] <= 150)}  `{name}` with {args.runs} "
                  f"runs ≤ 150 ms: {results[name]:.1f} ms")
        if args.importtime:
            print("\nslowest imports of `status` (cumulative, -X importtime):")
            print(import_profile(env))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
