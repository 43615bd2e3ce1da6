"""`python -m bot_bottle.orchestrator` (console script `bot-bottle-orchestrator`): `run`,
`status [--json] [--all]` and `demo`. The only module that reads `os.environ`; errors become
one line on stderr and a non-zero exit here, nowhere else."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from bot_bottle import __version__
from bot_bottle.orchestrator.config import Config, ConfigError
from bot_bottle.orchestrator.model import OrchestratorError

PROG = "bot-bottle-orchestrator"
STALL_GRACE = 300.0  # seconds a service loop may spend in one pass (see `_run`)
log = logging.getLogger("bot_bottle.orchestrator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Drive bot-bottle agents from Gitea issues and pull requests.",
        epilog="Configuration comes from the environment (FORGE_GITEA_URL, FORGE_TOKEN, "
               "FORGE_AGENT_ORG, FORGE_WEBHOOK_SECRET, ...); see docs/operator-guide.md.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="serve Gitea webhooks and drive bottles until SIGTERM/SIGINT")
    status = sub.add_parser("status", help="print the tracked runs")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--all", action="store_true", help="include destroyed runs")
    demo = sub.add_parser("demo", help="walk the whole lifecycle on this machine with an "
                          "embedded fake Gitea and a scripted agent in a real bottle")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary home")
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "status":  # status prints its table and nothing else
        from bot_bottle.orchestrator.run_log import configure
        try:  # journald sets JOURNAL_STREAM for a unit's stderr: lines get their priority
            configure(os.environ.get("BOT_BOTTLE_LOG_LEVEL", "INFO"),
                      journal=bool(os.environ.get("JOURNAL_STREAM")), stream=sys.stderr)
        except ValueError as exc:
            return _fail(str(exc))
    try:
        if args.command == "run":
            return _run(Config.from_env(os.environ))
        if args.command == "status":
            return _status(Config.from_env(os.environ, for_run=False), args.json, args.all)
        from bot_bottle.orchestrator.demo import run_demo
        return run_demo(os.environ, keep=args.keep)
    except ConfigError as exc:
        return _fail("; ".join(exc.problems))
    except (OrchestratorError, OSError) as exc:
        return _fail(str(exc), 1)


def _run(config: Config) -> int:
    from bot_bottle.orchestrator import bootstrap
    from bot_bottle.orchestrator.notify import Notifier, keepalive

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = bootstrap.build(config)
    service.start()
    notifier = Notifier(os.environ.get("NOTIFY_SOCKET"))
    notifier.notify("READY=1")
    log.info("listening on %s (webhook %s/webhook, sidecar %s)", service.url, service.url,
             config.sidecar_socket)
    usec = int(os.environ.get("WATCHDOG_USEC") or 0)
    interval = usec / 2e6 if usec > 0 else 5.0
    # a loop is stalled only after this long past its period: one pass may freeze (snapshot)
    # a large workspace, which takes minutes
    grace = max(usec / 1e6, STALL_GRACE)
    while not stop.wait(interval):
        if usec:  # pinged only while the store answers and every loop makes progress
            keepalive(notifier, service.store, service.heartbeats, grace=grace)
    notifier.notify("STOPPING=1")
    log.info("stopping: finishing in-flight requests; bottles are left as they are")
    service.stop()
    return 0


def _status(config: Config, as_json: bool, include_destroyed: bool) -> int:
    # one SQL query builds the whole answer (see run_listing): fast with 100k runs
    from bot_bottle.orchestrator import run_listing

    if not Path(config.home).is_dir():
        return _fail(f"no bot-bottle home at {config.home} (is BOT_BOTTLE_HOME right?)", 1)
    if not Path(config.db_path).is_file():
        return _fail(f"no database at {config.db_path}: the orchestrator has not run with "
                     "this home (or FORGE_DB_PATH points elsewhere)", 1)
    conn = run_listing.open_readonly(config.db_path)
    try:
        now = time.time()
        text = (run_listing.runs_document(conn, now, include_destroyed) + "\n" if as_json
                else run_listing.status_table(conn, now, include_destroyed))
    except sqlite3.Error as exc:
        return _fail(f"cannot read {config.db_path}: {exc}", 1)
    finally:
        conn.close()
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
