"""The `bot-bottle` command line: argparse parser and `main(argv=None) -> int`; no decisions here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import __version__, api
from ..errors import BackendError, BottleError, UsageError

MAX_PROMPT_FILE = 16 * 1024 * 1024

EPILOG = """environment:
  BOT_BOTTLE_HOME           manifests (agents/, bottles/, skills/) and state/ (default: ~/.bot-bottle)
  BOT_BOTTLE_LOG_MAX_BYTES  cap of each bottle's agent log, both files together (default: 10 MiB)
  BOT_BOTTLE_MAX_SNAPSHOT_BYTES
                            cap of what a commit snapshots, apparent sizes (a sparse file counts
                            in full); over it the commit fails with exit 4 (default: 10 GiB)
  ANTHROPIC_API_KEY, OPENAI_API_KEY
                            network = "egress": the key the egress gate adds to the agent's API
                            requests (the bottle gets a placeholder); ANTHROPIC_BASE_URL and
                            OPENAI_BASE_URL: the real API the gate forwards them to
  BOT_BOTTLE_AGENT_USER     run as root, bottles run as this unprivileged user (default: bot-bottle),
                            which must exist: useradd --system --user-group --no-create-home
                            --shell /usr/sbin/nologin bot-bottle
  BOT_BOTTLE_EGRESS_CA_FILE CA bundle the egress gate trusts for provider APIs (replaces the system's)
  BOT_BOTTLE_EGRESS_PIN     name=ip:port,... sends allowlisted names there, bypassing the address rules
                            (tests and development only)

exit codes:
  0    success (start/resume: the agent's own exit code, 128+N if killed by signal N)
  2    usage or manifest error (missing agent/bottle/skill, bad TOML, label giving an empty slug)
  3    state conflict (slug in use, unknown slug, resume of a never-frozen or running bottle)
  4    backend failure (bwrap, docker or git missing, the Kubernetes API unreachable or refusing,
       as root the agent user missing, the agent's program (or, for egress, python3) not in the
       bottle, clone failure, an OS error on the host; commit: a full disk or a workspace
       over the snapshot cap, the previous snapshot kept)
  124  start/resume: the agent ran past its time limit ('timeout') and was stopped
errors are one line on stderr: 'bot-bottle: error: ...'; each destination the egress gate
refuses: 'bot-bottle: egress refused: <host>:<port>: <reason>'"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _prompt_args(p) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", help="the prompt text given to the agent (on its stdin)")
    g.add_argument("--prompt-file", metavar="PATH",
                   help="read the prompt from this file, '-' for stdin (byte for byte, no NUL, at most 16 MiB)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bot-bottle", description="Run coding agents in isolated bottles.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"bot-bottle {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("start", help="create a bottle and run an agent in it",
                       description="Create a bottle and run the agent headless; exit code = the agent's. "
                                   "Its output goes to the bottle's log (see 'logs').")
    s.add_argument("agent", help="agent name: $BOT_BOTTLE_HOME/agents/<agent>.toml")
    s.add_argument("--headless", action="store_true", required=True,
                   help="run non-interactively (required; prints 'bot-bottle: slug=<slug>' first on stderr)")
    _prompt_args(s)
    s.add_argument("--bottle", action="append", default=[],
                   help="bottle name (repeatable); default: the agent's 'bottles' list")
    s.add_argument("--label", help="label the slug is made from (default: the agent name)")
    s.add_argument("--workspace", metavar="DIR",
                   help="move DIR in as the bottle's /workspace; the bottles' repo/dir go to /workspace/<bottle>")
    s.add_argument("--dry-run", action="store_true", help="print the resolved plan as JSON and change nothing")
    c = sub.add_parser("commit", help="freeze a bottle: stop it and snapshot workspace and home",
                       description="Stop the bottle's processes and snapshot it. Idempotent.")
    c.add_argument("slug", help="the bottle's slug")
    r = sub.add_parser("resume", help="boot a frozen bottle and continue the agent's session",
                       description="Restore the bottle's last state and run the agent with its resume argv.")
    r.add_argument("slug", help="the bottle's slug")
    r.add_argument("--headless", action="store_true", required=True, help="run non-interactively (required)")
    _prompt_args(r)
    d = sub.add_parser("destroy", help="remove a bottle, its snapshots and its state",
                       description="Remove the bottle. Idempotent: an unknown slug exits 0 with a note.")
    d.add_argument("slug", help="the bottle's slug")
    ls = sub.add_parser("list", help="list bottles", description="List bottles with slug, agent, state, started_at.")
    ls.add_argument("--json", action="store_true",
                    help="print a JSON array instead of a table (with the last run's exit_code, run_started_at, "
                         "ended_at, timed_out)")
    lg = sub.add_parser("logs", help="print a bottle's agent log (its stdout and stderr)",
                        description="Print the agent's captured output, oldest first; secrets are redacted.")
    lg.add_argument("slug", help="the bottle's slug")
    lg.add_argument("--tail", type=int, metavar="N", help="print only the last N lines")
    return p


def _silence(stream) -> None:
    """The reader of `stream` has gone: send what follows to /dev/null instead of failing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _say(line: str) -> None:
    """One line on stderr. The caller may have died and closed the pipe: the bottle must live
    on, so a broken stderr never aborts a start or resume."""
    try:
        print(line, file=sys.stderr, flush=True)
    except BrokenPipeError:
        _silence(sys.stderr)


def _slug_line(slug):
    _say(f"bot-bottle: slug={slug}")


def _read_prompt(args) -> str | bytes:
    if args.prompt is not None:
        return args.prompt
    try:
        if args.prompt_file == "-":
            data = sys.stdin.buffer.read(MAX_PROMPT_FILE + 1)
        else:
            with open(args.prompt_file, "rb") as fh:
                data = fh.read(MAX_PROMPT_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the prompt file {args.prompt_file}: {exc.strerror or exc}") from exc
    if len(data) > MAX_PROMPT_FILE:
        raise UsageError(f"the prompt file {args.prompt_file} is over {MAX_PROMPT_FILE} bytes")
    if b"\0" in data:
        raise UsageError(f"the prompt file {args.prompt_file} contains a NUL byte")
    return data


def _logs(home, args) -> int:
    out = sys.stdout.buffer
    try:
        api.logs(home, args.slug, out, tail=args.tail)
        out.flush()
    except BrokenPipeError:   # `bot-bottle logs s | head`
        _silence(sys.stdout)
    return 0


def _table(rows) -> None:
    print(f"{'SLUG':<30} {'AGENT':<16} {'STATE':<8} STARTED_AT")
    for row in rows:
        print(f"{row['slug']:<30} {row['agent'] or '':<16} {row['state']:<8} {row['started_at'] or ''}")


def main(argv=None) -> int:
    # private by default whatever the caller's umask: bottles, clones, sockets and snapshots
    # are the owner's alone (the agent in the bottle inherits this umask too); restored after,
    # for callers that run main() in their own process
    old = os.umask(0o077)
    try:
        return _main(argv)
    finally:
        os.umask(old)


def _main(argv) -> int:
    environ = dict(os.environ)
    home = Path(environ.get("BOT_BOTTLE_HOME") or Path.home() / ".bot-bottle")
    notify = lambda message: _say(f"bot-bottle: {message}")  # noqa: E731
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # a bare `bot-bottle`: what it can do
        print(f"{parser.format_usage().rstrip()}\nrun 'bot-bottle --help' for the commands, "
              "their options and the exit codes", file=sys.stderr)
        return UsageError.exit_code
    try:
        args = parser.parse_args(argv)
        if args.cmd == "start":
            return api.start_headless(home, args.agent, _read_prompt(args), environ=environ,
                                      bottles=args.bottle, label=args.label, workspace=args.workspace,
                                      dry_run=args.dry_run, on_slug=_slug_line, notify=notify)
        if args.cmd == "resume":
            return api.resume_headless(home, args.slug, _read_prompt(args), environ=environ,
                                       on_slug=_slug_line, notify=notify)
        if args.cmd == "commit":
            api.freeze(home, args.slug, environ=environ)
            _say(f"bot-bottle: frozen {args.slug}")
            return 0
        if args.cmd == "destroy":
            if not api.destroy(home, args.slug, environ=environ):
                _say(f"bot-bottle: note: no bottle {args.slug}, nothing to destroy")
            return 0
        if args.cmd == "logs":
            return _logs(home, args)
        rows = api.list_bottles(home)
        print(json.dumps(rows, indent=2)) if args.json else _table(rows)
        return 0
    except BottleError as exc:
        _say(f"bot-bottle: error: {exc}")
        return exc.exit_code
    except OSError as exc:  # the host refused: unwritable home, disk full, ...
        _say(f"bot-bottle: error: {exc}")
        return BackendError.exit_code
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
