"""`python -m bot_bottle.orchestrator` (console script `bot-bottle-orchestrator`): `run`,
`status [--json] [--all]` and `demo`. The only module that reads `os.environ`; errors become
one line on stderr and a non-zero exit here, nowhere else."""

from __future__ import annotations

# only what `status` needs at the top: it must start fast as a whole process (the service's
# modules, logging and the config's dataclasses are imported by the commands that use them)
import argparse
import os
import sys

from bot_bottle import __version__

PROG = "bot-bottle-orchestrator"
STALL_GRACE = 300.0  # seconds a service loop may spend in one pass (see `_run`)


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
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # a bare command: what it can do
        print(f"{parser.format_usage().rstrip()}\nrun '{PROG} --help' for the commands and "
              "the environment they read", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command == "status":  # status prints its table and nothing else
        return _status(os.environ, args.json, args.all)
    from bot_bottle.orchestrator.config import Config, ConfigError
    from bot_bottle.orchestrator.model import OrchestratorError
    from bot_bottle.orchestrator.run_log import configure
    try:  # journald sets JOURNAL_STREAM for a unit's stderr: lines get their priority
        configure(os.environ.get("BOT_BOTTLE_LOG_LEVEL", "INFO"),
                  journal=bool(os.environ.get("JOURNAL_STREAM")), stream=sys.stderr)
    except ValueError as exc:
        return _fail(str(exc))
    # private by default whatever the caller's umask: the DB, logs, the git gate's repositories
    # and every file a child makes are the service user's alone (the unit also sets UMask=)
    os.umask(0o077)
    try:
        if args.command == "run":
            return _run(Config.from_env(os.environ))
        from bot_bottle.orchestrator.demo import run_demo
        return run_demo(os.environ, keep=args.keep)
    except ConfigError as exc:
        return _fail("; ".join(exc.problems))
    except (OrchestratorError, OSError) as exc:
        return _fail(str(exc), 1)


def _run(config) -> int:
    import logging
    import signal
    import threading

    from bot_bottle.backend import limits
    from bot_bottle.orchestrator import bootstrap
    from bot_bottle.orchestrator.notify import Notifier, keepalive

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log = logging.getLogger("bot_bottle.orchestrator")
    # before any thread or child exists: under systemd's Delegate=yes the service moves into a
    # leaf cgroup, so each bottle can get a cgroup of its own beside it
    log.info("limits: %s", limits.enter_leaf())
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


def status_paths(environ) -> tuple[str, str]:
    """The home and the DB `status` reads: `Config.from_env`'s rule, without importing the
    config (its dataclasses cost start-up time; tests/unit/orchestrator/test_main.py checks
    the two agree)."""
    get = lambda key: (environ.get(key) or "").strip()  # noqa: E731
    home = get("BOT_BOTTLE_HOME") or (get("HOME") or "~").rstrip("/") + "/.bot-bottle"
    return home, get("FORGE_DB_PATH") or home.rstrip("/") + "/orchestrator.db"


def _status(environ, as_json: bool, include_destroyed: bool) -> int:
    # ready text from `run_views` (see run_listing), joined by SQLite in pages and written as
    # bytes: no per-row Python and no buffer the size of the answer, fast with 100k runs
    import sqlite3
    import time

    from bot_bottle.orchestrator import run_listing

    home, db_path = status_paths(environ)
    if not os.path.isdir(home):
        return _fail(f"no bot-bottle home at {home} (is BOT_BOTTLE_HOME right?)", 1)
    if not os.path.isfile(db_path):
        return _fail(f"no database at {db_path}: the orchestrator has not run with "
                     "this home (or FORGE_DB_PATH points elsewhere)", 1)
    buffer = getattr(sys.stdout, "buffer", None)  # None when stdout is a StringIO (tests)

    def write(chunk: bytes | str) -> None:
        if buffer is None:
            sys.stdout.write(chunk.decode() if isinstance(chunk, bytes) else chunk)
        else:
            buffer.write(chunk.encode() if isinstance(chunk, str) else chunk)

    try:
        conn = run_listing.open_readonly(db_path)
    except Exception as exc:  # a StoreError, whose module is imported only then
        from bot_bottle.orchestrator.store_rows import StoreError
        if not isinstance(exc, StoreError):
            raise
        return _fail(str(exc), 1)
    conn.text_factory = bytes  # the stored text goes out as it is: no decoding, no encoding
    chunks = (run_listing.document_chunks if as_json else run_listing.table_chunks)(
        conn, time.time(), include_destroyed)
    try:
        sys.stdout.flush()
        for chunk in chunks:
            write(chunk)
        if as_json:
            write(b"\n")
        sys.stdout.flush()
    except sqlite3.Error as exc:
        return _fail(f"cannot read {db_path}: {exc}", 1)
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    finally:
        chunks.close()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
