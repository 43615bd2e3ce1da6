"""A scripted test agent (stdlib only) run through the `command` provider inside a bottle.

`python3 /opt/bot-bottle/bot_bottle/demo_support/scripted_agent.py [--exit-code N] [--sleep S]
[--issue N] [--branch B] [--push]`: reads the prompt (the file BOT_BOTTLE_PROMPT_FILE, else
stdin), appends "run <k>: <prompt>" to AGENT_LOG.md in the working directory, commits it on the
branch (default bot/work), and when BOT_BOTTLE_FORGE_SOCKET is set talks to the sidecar: on
run 1 it opens a PR and comments on the issue (--issue, else the first `#N` in the prompt); it
always POSTs /done. With --push it commits on the branch checked out (the orchestrator's
`bot-bottle/<slug>`) and delivers it with `git push origin HEAD` through the git gate instead of
opening a PR (the service opens it after done); a refused push makes its done `failed`. The
sidecar helpers below are importable for other tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def sidecar_call(socket_path, token, method, path, body=None):
    """One JSON request to the sidecar; returns (status, parsed JSON or None)."""
    conn = UnixHTTPConnection(socket_path)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, None
    finally:
        conn.close()


def open_pr(sock, token, branch, title, body, base="main"):
    return sidecar_call(sock, token, "POST", "/pulls", {"title": title, "body": body, "head": branch, "base": base})


def comment(sock, token, number, body):
    return sidecar_call(sock, token, "POST", f"/issues/{number}/comments", {"body": body})


def done(sock, token, status, summary):
    return sidecar_call(sock, token, "POST", "/done", {"status": status, "summary": summary})


GIT = ["git", "-c", "user.name=bot-bottle scripted agent", "-c", "user.email=agent@bot-bottle.invalid",
       "-c", "safe.directory=*"]


def _git(*args):
    subprocess.run(GIT + list(args), check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="scripted test agent")
    p.add_argument("--exit-code", type=int, default=0, help="exit with this code")
    p.add_argument("--sleep", type=float, default=0.0, help="sleep this long before exiting")
    p.add_argument("--issue", type=int, help="issue number for the sidecar comment")
    p.add_argument("--branch", default="bot/work", help="branch to commit on")
    p.add_argument("--push", action="store_true",
                   help="commit on the current branch and `git push origin HEAD` (no sidecar PR)")
    args = p.parse_args(argv)
    prompt_file = os.environ.get("BOT_BOTTLE_PROMPT_FILE")
    if prompt_file and os.path.exists(prompt_file):
        with open(prompt_file, encoding="utf-8") as fh:
            prompt = fh.read()
    else:
        prompt = sys.stdin.read()
    log = "AGENT_LOG.md"
    runs = 0
    if os.path.exists(log):
        with open(log, encoding="utf-8") as fh:
            runs = sum(1 for line in fh if line.startswith("run "))
    run = runs + 1
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"run {run}: {prompt}\n")
    print(f"scripted-agent: run {run}, saw {runs} earlier run(s)", flush=True)
    status = "done" if args.exit_code == 0 else "failed"
    if os.path.isdir(".git"):
        if not args.push:
            _git("checkout", "-q", "-B", args.branch)
        _git("add", log)
        _git("commit", "-q", "-m", f"scripted agent run {run}")
        if args.push:
            pushed = subprocess.run(GIT + ["push", "-q", "origin", "HEAD"], stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True)
            print(f"scripted-agent: git push origin HEAD exited {pushed.returncode}", flush=True)
            if pushed.returncode != 0:
                print(pushed.stderr, end="", flush=True)
                status = "failed"
    sock = os.environ.get("BOT_BOTTLE_FORGE_SOCKET")
    if sock:
        token = os.environ.get("BOT_BOTTLE_FORGE_RUN_TOKEN", "")
        issue = args.issue
        if issue is None and (m := re.search(r"#(\d+)", prompt)):
            issue = int(m.group(1))
        if run == 1:
            if not args.push:
                open_pr(sock, token, args.branch, "scripted agent work", f"run {run}")
            if issue is not None:
                comment(sock, token, issue, f"scripted agent: run {run} done")
        done(sock, token, status, f"run {run}")
    if args.sleep:
        time.sleep(args.sleep)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
