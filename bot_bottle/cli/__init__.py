"""The `bot-bottle` command line: argparse parser and `main(argv=None) -> int`; no decisions here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import api
from ..errors import BackendError, BottleError, UsageError


EPILOG = """environment:
  BOT_BOTTLE_HOME  manifests (agents/, bottles/) and state/ (default: ~/.bot-bottle)

exit codes:
  0  success (start/resume: the agent's own exit code, 128+N if killed by signal N)
  2  usage or manifest error (missing agent/bottle, bad TOML, label giving an empty slug)
  3  state conflict (slug in use, unknown slug, resume of a never-frozen or running bottle)
  4  backend failure (bwrap, docker or git missing, clone failure, an OS error on the host)
errors are one line on stderr: 'bot-bottle: error: ...'"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bot-bottle", description="Run coding agents in isolated bottles.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("start", help="create a bottle and run an agent in it",
                       description="Create a bottle and run the agent headless; exit code = the agent's.")
    s.add_argument("agent", help="agent name: $BOT_BOTTLE_HOME/agents/<agent>.toml")
    s.add_argument("--headless", action="store_true", required=True,
                   help="run non-interactively (required; prints 'bot-bottle: slug=<slug>' first on stderr)")
    s.add_argument("--prompt", required=True, help="the prompt text given to the agent")
    s.add_argument("--bottle", action="append", default=[],
                   help="bottle name (repeatable); default: the agent's 'bottles' list")
    s.add_argument("--label", help="label the slug is made from (default: the agent name)")
    s.add_argument("--dry-run", action="store_true", help="print the resolved plan as JSON and change nothing")
    c = sub.add_parser("commit", help="freeze a bottle: stop it and snapshot workspace and home",
                       description="Stop the bottle's processes and snapshot it. Idempotent.")
    c.add_argument("slug", help="the bottle's slug")
    r = sub.add_parser("resume", help="boot a frozen bottle and continue the agent's session",
                       description="Restore the last snapshot and run the agent with its resume argv.")
    r.add_argument("slug", help="the bottle's slug")
    r.add_argument("--headless", action="store_true", required=True, help="run non-interactively (required)")
    r.add_argument("--prompt", required=True, help="the prompt text given to the agent")
    d = sub.add_parser("destroy", help="remove a bottle, its snapshots and its state",
                       description="Remove the bottle. Idempotent: an unknown slug exits 0 with a note.")
    d.add_argument("slug", help="the bottle's slug")
    ls = sub.add_parser("list", help="list bottles", description="List bottles with slug, agent, state, started_at.")
    ls.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    return p


def _slug_line(slug):
    print(f"bot-bottle: slug={slug}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    environ = dict(os.environ)
    home = Path(environ.get("BOT_BOTTLE_HOME") or Path.home() / ".bot-bottle")
    try:
        args = build_parser().parse_args(argv)
        if args.cmd == "start":
            return api.start_headless(home, args.agent, args.prompt, environ=environ, bottles=args.bottle,
                                      label=args.label, dry_run=args.dry_run, on_slug=_slug_line)
        if args.cmd == "resume":
            return api.resume_headless(home, args.slug, args.prompt, environ=environ, on_slug=_slug_line)
        if args.cmd == "commit":
            api.freeze(home, args.slug, environ=environ)
            print(f"bot-bottle: frozen {args.slug}", file=sys.stderr)
            return 0
        if args.cmd == "destroy":
            if not api.destroy(home, args.slug, environ=environ):
                print(f"bot-bottle: note: no bottle {args.slug}, nothing to destroy", file=sys.stderr)
            return 0
        rows = api.list_bottles(home)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['slug']:<30} {row['agent'] or '':<16} {row['state']:<8} {row['started_at'] or ''}")
        return 0
    except BottleError as exc:
        print(f"bot-bottle: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the host refused: unwritable home, disk full, ...
        print(f"bot-bottle: error: {exc}", file=sys.stderr)
        return BackendError.exit_code
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
