"""`python -m bot_bottle.orchestrator` (console script `bot-bottle-orchestrator`): `run`,
`status [--json] [--all]` and `demo`. The only module that reads `os.environ`; errors become
one line on stderr and a non-zero exit here, nowhere else."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from bot_bottle.orchestrator.config import Config, ConfigError
from bot_bottle.orchestrator.model import OrchestratorError

PROG = "bot-bottle-orchestrator"
log = logging.getLogger("bot_bottle.orchestrator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Drive bot-bottle agents from Gitea issues and pull requests.",
        epilog="Configuration comes from the environment (FORGE_GITEA_URL, FORGE_TOKEN, "
               "FORGE_AGENT_ORG, FORGE_WEBHOOK_SECRET, ...); see docs/operator-guide.md.")
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
        logging.basicConfig(level=os.environ.get("BOT_BOTTLE_LOG_LEVEL", "INFO").upper(),
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
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
    from bot_bottle.orchestrator.notify import Notifier

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
    while not stop.wait(interval):
        if usec and service.store.ping():  # only a live store proves we are healthy
            notifier.notify("WATCHDOG=1")
    notifier.notify("STOPPING=1")
    log.info("stopping: finishing in-flight requests; bottles are left as they are")
    service.stop()
    return 0


def _status(config: Config, as_json: bool, include_destroyed: bool) -> int:
    from bot_bottle.orchestrator import provenance, views
    from bot_bottle.orchestrator.store import read_runs

    now = time.time()
    runs = read_runs(Path(config.db_path), include_destroyed=include_destroyed) \
        if Path(config.db_path).exists() else []
    if as_json:
        json.dump([provenance.run_json(r, now) for r in runs], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(views.status_table(runs, now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
