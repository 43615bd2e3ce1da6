"""A stand-in for the core CLI (`python -m bot_bottle`) that runs no bottle: usable as
`BOT_BOTTLE_CLI="<python> -m tests.support.fake_core_cli"` by the reliability tests and
the benchmarks, so they need neither bwrap nor an agent.

It owns only the CLI surface the orchestrator's `SubprocessBottleRunner` uses:
`start <agent> --headless --label L (--prompt P | --prompt-file F|-) [--bottle B]...
[--workspace DIR]` and `resume <slug> --headless (--prompt P | --prompt-file F|-)` print
`bot-bottle: slug=<slug>` as their first stderr line, sleep, then exit 0; `commit <slug>`
(stops a sleeping start/resume of that slug, like the real `commit`), `destroy <slug>`,
`list --json` and `logs <slug> [--tail N]`. Like the real CLI, `start --workspace DIR` moves
DIR into the bottle (`state/<slug>/workspace`) and the agent's output goes to
`state/<slug>/agent.log`. Every call is appended as one JSON line to
`$BOT_BOTTLE_HOME/fake-cli.log` (fields: cmd, argv, slug, pid, t, and per command
agent/label/prompt/bottles/workspace/workspace_branch), which with `state/` is the fake's
only state.

Tuning (a file in the home, so each orchestrator's fake bottles follow their own home):
`FAKE_CLI_SLEEP` (seconds, default 0.2) or `{"sleep": s}` in `$BOT_BOTTLE_HOME/fake-cli.json`;
there also `{"fail_start": true}` makes `start` fail like the real CLI (`bot-bottle: error:
...`, exit 3) before printing a slug; `{"output": "text"}` is what the agent "prints" (into
its log); `{"exit_code": n}` is the agent's exit code; `{"timeout": n}` makes start/resume
end like a wall-time stop (`bot-bottle: timeout: ...` on stderr, exit 124).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from bot_bottle.state import pid_alive, slugify

LOG_NAME = "fake-cli.log"
CONFIG_NAME = "fake-cli.json"
DEFAULT_SLEEP = 0.2
TIMEOUT_EXIT = 124


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
    s.add_argument("--bottle", action="append", default=[])
    s.add_argument("--workspace")
    r = sub.add_parser("resume")
    r.add_argument("slug")
    r.add_argument("--headless", action="store_true")
    for cmd in (s, r):
        prompt = cmd.add_mutually_exclusive_group(required=True)
        prompt.add_argument("--prompt")
        prompt.add_argument("--prompt-file")
    for name in ("commit", "destroy"):
        sub.add_parser(name).add_argument("slug")
    lg = sub.add_parser("logs")
    lg.add_argument("slug")
    lg.add_argument("--tail", type=int)
    ls = sub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    return p


def _prompt(args) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file == "-":
        return sys.stdin.buffer.read().decode("utf-8")
    with open(args.prompt_file, encoding="utf-8") as fh:
        return fh.read()


def _bottle_dir(home: Path, slug: str) -> Path:
    return home / "state" / slug


def _take_workspace(home: Path, slug: str, workspace: str) -> str | None:
    """Move the checkout in, like the real CLI; the branch it was on (None: not git)."""
    src = Path(workspace)
    if not src.is_dir():
        raise FileNotFoundError(f"workspace {workspace} is not a directory")
    head = src / ".git" / "HEAD"
    branch = None
    if head.is_file():
        text = head.read_text().strip()
        branch = text.removeprefix("ref: refs/heads/") if text.startswith("ref: ") else text
    dest = _bottle_dir(home, slug) / "workspace"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))
    return branch


def _run_agent(home: Path, slug: str) -> int:
    """The "agent": its configured output goes to the bottle's log; then sleep and exit."""
    config = _config(home)
    log = _bottle_dir(home, slug) / "agent.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(str(config.get("output", "")))
    _sleep(home)
    if config.get("timeout"):
        print(f"bot-bottle: timeout: the agent ran past its {int(config['timeout'])} s limit",
              file=sys.stderr, flush=True)
        return TIMEOUT_EXIT
    return int(config.get("exit_code", 0))


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
                 "label": args.label, "prompt": _prompt(args), "bottles": args.bottle,
                 "workspace": args.workspace}
        if _config(home).get("fail_start"):
            _record(home, {**entry, "ok": False})
            return _error("fake start failure (fail_start)", 3)
        if slug in bottles(home):
            _record(home, {**entry, "ok": False})
            return _error(f"slug {slug!r} is in use by another bottle", 3)
        if args.workspace:
            try:
                entry["workspace_branch"] = _take_workspace(home, slug, args.workspace)
            except OSError as exc:
                _record(home, {**entry, "ok": False})
                return _error(str(exc), 4)
        _record(home, {**entry, "ok": True})
        print(f"bot-bottle: slug={slug}", file=sys.stderr, flush=True)
        return _run_agent(home, slug)
    if args.cmd == "resume":
        if args.slug not in bottles(home):
            _record(home, {"cmd": "resume", "argv": raw, "slug": args.slug, "ok": False})
            return _error(f"no bottle {args.slug}", 3)
        _record(home, {"cmd": "resume", "argv": raw, "slug": args.slug, "prompt": _prompt(args),
                       "ok": True})
        print(f"bot-bottle: slug={args.slug}", file=sys.stderr, flush=True)
        return _run_agent(home, args.slug)
    if args.cmd == "logs":
        log = _bottle_dir(home, args.slug) / "agent.log"
        if args.slug not in bottles(home):
            return _error(f"no bottle with slug {args.slug!r}", 3)
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        lines = text.splitlines()
        tail = lines[-args.tail:] if args.tail else lines
        sys.stdout.write("".join(line + "\n" for line in tail))
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
        shutil.rmtree(_bottle_dir(home, args.slug), ignore_errors=True)
        return 0
    _record(home, {"cmd": "list", "argv": raw})
    rows = [{k: v for k, v in b.items() if k != "pid"} for b in bottles(home).values()]
    print(json.dumps(rows) if args.json else "\n".join(r["slug"] for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
