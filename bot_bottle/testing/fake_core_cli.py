"""A stand-in for the core CLI (`python -m bot_bottle`) that runs no bottle: usable as
`BOT_BOTTLE_CLI="<python> -m bot_bottle.testing.fake_core_cli"` by the reliability tests and
the benchmarks, so they need neither bwrap nor an agent.

It owns only the CLI surface the orchestrator's `SubprocessBottleRunner` uses:
`start <agent> --headless --label L --prompt P [--bottle B]...` and
`resume <slug> --headless --prompt P` print `bot-bottle: slug=<slug>` as their first stderr
line, sleep, then exit 0; `commit <slug>` (stops a sleeping start/resume of that slug, like
the real `commit`), `destroy <slug>` and `list --json`. Every call is appended as one JSON
line to `$BOT_BOTTLE_HOME/fake-cli.log` (fields: cmd, argv, slug, pid, t, and per command
agent/label/prompt/bottles), which is also the fake's only state.

Tuning (a file in the home, so each orchestrator's fake bottles follow their own home):
`FAKE_CLI_SLEEP` (seconds, default 0.2) or `{"sleep": s}` in `$BOT_BOTTLE_HOME/fake-cli.json`;
`{"fail_start": true}` there makes `start` fail like the real CLI (`bot-bottle: error: ...`,
exit 3) before printing a slug.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from bot_bottle.state import pid_alive, slugify

LOG_NAME = "fake-cli.log"
CONFIG_NAME = "fake-cli.json"
DEFAULT_SLEEP = 0.2


def home_dir(environ=os.environ) -> Path:
    raw = environ.get("BOT_BOTTLE_HOME") or os.path.join(environ.get("HOME", "~"), ".bot-bottle")
    return Path(os.path.expanduser(raw))


def read_log(home: Path) -> list[dict]:
    """Every recorded call, in order (tests read this)."""
    try:
        text = (Path(home) / LOG_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _config(home: Path) -> dict:
    try:
        data = json.loads((home / CONFIG_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def _record(home: Path, entry: dict) -> None:
    entry = {**entry, "pid": os.getpid(), "t": time.time()}
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one O_APPEND write per line: concurrent callers do not interleave
    finally:
        os.close(fd)


def bottles(home: Path) -> dict[str, dict]:
    """slug -> {slug, agent, label, state, pid} from the log; destroyed slugs are gone."""
    known: dict[str, dict] = {}
    for e in read_log(home):
        slug = e.get("slug")
        if not slug:
            continue
        if e["cmd"] == "start" and e.get("ok"):
            known[slug] = {"slug": slug, "agent": e.get("agent"), "label": e.get("label"),
                           "state": "running", "pid": e["pid"], "started_at": e["t"],
                           "frozen_at": None, "backend": "fake"}
        elif slug in known and e["cmd"] == "resume":
            known[slug].update(state="running", pid=e["pid"])
        elif slug in known and e["cmd"] == "commit":
            known[slug].update(state="frozen", frozen_at=e["t"])
        elif e["cmd"] == "destroy":
            known.pop(slug, None)
    for b in known.values():
        if b["state"] == "running" and not pid_alive(b["pid"]):
            b["state"] = "exited"
    return known


def _sleep(home: Path) -> None:
    raw = os.environ.get("FAKE_CLI_SLEEP")
    seconds = float(raw) if raw else float(_config(home).get("sleep", DEFAULT_SLEEP))
    time.sleep(seconds)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fake_core_cli")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("agent")
    s.add_argument("--headless", action="store_true")
    s.add_argument("--label")
    s.add_argument("--prompt", default="")
    s.add_argument("--bottle", action="append", default=[])
    r = sub.add_parser("resume")
    r.add_argument("slug")
    r.add_argument("--headless", action="store_true")
    r.add_argument("--prompt", default="")
    for name in ("commit", "destroy"):
        sub.add_parser(name).add_argument("slug")
    ls = sub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    return p


def _error(msg: str, code: int) -> int:
    print(f"bot-bottle: error: {msg}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `commit` stops a start/resume with SIGTERM, as the real one stops the bottle: exit 0 then
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    home = home_dir()
    raw = list(sys.argv[1:] if argv is None else argv)
    if args.cmd == "start":
        slug = slugify(args.label or args.agent)
        entry = {"cmd": "start", "argv": raw, "slug": slug, "agent": args.agent,
                 "label": args.label, "prompt": args.prompt, "bottles": args.bottle}
        if _config(home).get("fail_start"):
            _record(home, {**entry, "ok": False})
            return _error("fake start failure (fail_start)", 3)
        if slug in bottles(home):
            _record(home, {**entry, "ok": False})
            return _error(f"slug {slug!r} is in use by another bottle", 3)
        _record(home, {**entry, "ok": True})
        print(f"bot-bottle: slug={slug}", file=sys.stderr, flush=True)
        _sleep(home)
        return 0
    if args.cmd == "resume":
        if args.slug not in bottles(home):
            _record(home, {"cmd": "resume", "argv": raw, "slug": args.slug, "ok": False})
            return _error(f"no bottle {args.slug}", 3)
        _record(home, {"cmd": "resume", "argv": raw, "slug": args.slug, "prompt": args.prompt,
                       "ok": True})
        print(f"bot-bottle: slug={args.slug}", file=sys.stderr, flush=True)
        _sleep(home)
        return 0
    if args.cmd == "commit":
        b = bottles(home).get(args.slug)
        _record(home, {"cmd": "commit", "argv": raw, "slug": args.slug, "ok": b is not None})
        if b is None:
            return _error(f"no bottle {args.slug}", 3)
        if b["state"] == "running" and b["pid"] != os.getpid():
            try:
                os.kill(b["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        print(f"bot-bottle: frozen {args.slug}", file=sys.stderr)
        return 0
    if args.cmd == "destroy":
        _record(home, {"cmd": "destroy", "argv": raw, "slug": args.slug, "ok": True})
        return 0
    _record(home, {"cmd": "list", "argv": raw})
    rows = [{k: v for k, v in b.items() if k != "pid"} for b in bottles(home).values()]
    print(json.dumps(rows) if args.json else "\n".join(r["slug"] for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
