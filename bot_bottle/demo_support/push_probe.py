"""A test agent (stdlib only, run by the `command` provider inside a bottle) that probes the
git gate the way an agent would push, then signals done through the sidecar.

In the workspace the orchestrator checked out (on `bot-bottle/<slug>`, origin = the gate) it
commits `hello.txt` and pushes, recording each push's exit code and stderr:
`main` (HEAD:main), `other_run` (HEAD:bot-bottle/someone-else), `clean` (HEAD, its own
branch), `delete` (:its branch), then commits `notes.txt` holding an Anthropic-shaped key on
line 2 and the run token on line 3 and pushes that (`secret`), and drops that commit again.
The record goes to `~/push-report.json` (stderr raw: the agent log would redact the token);
then `POST /done`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# built at run time: this package is bound into every bottle, and tests search bottles for
# key-shaped strings (a literal, or a folded constant in a .pyc, would be found)
PLANTED_KEY = "-".join(["sk", "ant", "api03", "Plant3d_Key" * 5])
GIT = ["git", "-c", "user.name=push probe", "-c", "user.email=probe@bot-bottle.invalid",
       "-c", "safe.directory=*"]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(GIT + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)


def commit(name: str, text: str, message: str) -> None:
    with open(name, "w", encoding="utf-8") as fh:
        fh.write(text)
    git("add", name)
    git("commit", "-q", "-m", message)


def main() -> int:
    branch = git("symbolic-ref", "--short", "HEAD").stdout.strip()
    token = os.environ.get("BOT_BOTTLE_FORGE_RUN_TOKEN", "")
    report = {"branch": branch, "remote": git("remote", "get-url", "origin").stdout.strip()}

    def push(name: str, *args: str) -> None:
        done_ = git("push", "origin", *args)
        report[name] = {"code": done_.returncode, "stderr": done_.stderr}

    commit("hello.txt", "hello from the bottle\n", "greet")
    report["head"] = git("rev-parse", "HEAD").stdout.strip()
    push("main", "HEAD:main")
    push("other_run", "HEAD:bot-bottle/someone-else")
    push("clean", "HEAD")
    push("delete", f":{branch}")
    commit("notes.txt", f"notes\nkey = {PLANTED_KEY}\ntoken {token}\n", "notes")
    push("secret", "HEAD")
    git("reset", "-q", "--hard", "HEAD~1")
    with open(os.path.expanduser("~/push-report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh)
    sock = os.environ.get("BOT_BOTTLE_FORGE_SOCKET")
    if sock:
        from scripted_agent import done   # its sibling, run as a script in the bottle
        done(sock, token, "done", "pushed through the gate")
    codes = [f"{name}={result['code']}" for name, result in report.items()
             if isinstance(result, dict)]
    print("push-probe: " + ", ".join(codes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
