"""The git gate's pre-receive hook: what the agent may push, and the push to Gitea.

`git receive-pack` runs it in the run's gate repository (`git_gate_repo` writes
`hooks/pre-receive`, a shell line that runs `main()` with the service's interpreter) with the
pushed ref updates on stdin, the new objects still in quarantine. In order:
1. refs: only `refs/heads/<branch>` (the run's `bot-bottle/<slug>`) is accepted, as a commit,
   created or updated (a forced update too: the agent's branch is its own); a delete, a tag,
   another branch or another run's branch refuses the whole push;
2. the scan: every new commit (`git rev-list <new> --not --all`, at most MAX_COMMITS) — its
   message and the added lines of its diff against its first parent — goes through
   `gate.secrets` with the run token, the keys the gates inject and `FORGE_TOKEN` as known
   values; a finding refuses the push, naming the file (or message) and line, never the value;
3. the forward: `git push` of the new commit to Gitea's `refs/heads/<branch>`, leased on the
   value the agent's push replaced (so a branch changed on Gitea meanwhile is not overwritten).
   Only when Gitea accepts does the hook accept, so the agent's push result is the truth.
What it says goes to stderr, which the agent's git prints as `remote: ...`; exit 0 accepts,
anything else refuses the whole push. The outcome goes as JSON to `BOT_BOTTLE_GATE_REPORT`
(the service records it and, for a secret, comments on the issue). Its environment is set by
the service and stays on the host: `BOT_BOTTLE_GATE_BRANCH`, `..._REMOTE` (the Gitea URL),
`..._REPORT`, `..._KNOWN` (JSON {label: value}) and Gitea's token as git's extra header for
the remote (`GIT_CONFIG_*`, see `workspace.token_env`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass

from bot_bottle.gate.secrets import Scanner

ZERO = "0" * 40
MAX_COMMITS = 1000     # more new commits in one push are refused (push in steps)
MAX_REPORTED = 20      # findings listed to the agent and on the issue
PREFIX = "bot-bottle git gate: "
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DIFF = ["log", "-p", "-U0", "--format=%x1e%H", "--no-color", "--no-renames", "--no-ext-diff",
         "--no-textconv", "--text", "--diff-merges=first-parent", "--src-prefix=a/",
         "--dst-prefix=b/"]


@dataclass(frozen=True)
class Update:
    old: str
    new: str
    ref: str


@dataclass(frozen=True)
class Hit:
    commit: str
    file: str | None   # None: the commit message
    line: int
    kind: str

    def describe(self) -> str:
        where = f"{self.file} line {self.line}" if self.file is not None \
            else f"commit message line {self.line}"
        return f"{where} (commit {self.commit[:12]}): {self.kind}"


def parse_updates(text: str) -> list[Update]:
    return [Update(*line.split(" ", 2)) for line in text.splitlines() if line.count(" ") >= 2]


def ref_problems(updates: list[Update], branch: str) -> list[str]:
    """Why each refused update is refused ([] when the push may go on)."""
    wanted = f"refs/heads/{branch}"
    problems = []
    for u in updates:
        if u.ref != wanted:
            problems.append(f"refused {u.ref}: this run may push only {wanted} "
                            f"(git push origin HEAD:{branch})")
        elif u.new == ZERO:
            problems.append(f"refused deleting {u.ref}: the gate does not delete branches")
    if not updates:
        problems.append("nothing to push")
    return problems


def _git(*args: str, cwd: str | None = None) -> str:
    done = subprocess.run(["git", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace", cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def scan_push(new: str, known: dict[str, str], cwd: str | None = None) -> list[Hit]:
    """The findings in the commits `new` brings that no ref has yet (messages, then added
    lines), in the repository at `cwd` (the hook's: the current directory)."""
    scanner = Scanner(known)
    hits: list[Hit] = []
    commit, number = "", 0
    # split on "\n" only: str.splitlines would also split on the \x1e marker itself
    for line in _git("log", "--format=%x1e%H%n%B", new, "--not", "--all", cwd=cwd).split("\n"):
        if line.startswith("\x1e"):
            commit, number = line[1:], 0
            continue
        number += 1
        hits += [Hit(commit, None, number, f.kind) for f in scanner.line(line, number)]
    hits += _scan_diffs(new, scanner, cwd)
    return list(dict.fromkeys(hits))


def _scan_diffs(new: str, scanner: Scanner, cwd: str | None) -> list[Hit]:
    """Added lines of each new commit's diff, read as git prints them (never all in memory):
    the hunk header's counts say exactly which lines belong to the hunk, so no file content
    is ever taken for a header."""
    proc = subprocess.Popen(["git", *_DIFF, new, "--not", "--all"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd)
    hits: list[Hit] = []
    commit, path, minus, plus, number = "", None, 0, 0, 0
    with proc.stdout:
        for raw in proc.stdout:
            line = raw.rstrip(b"\n").decode("utf-8", "replace")
            if minus or plus:
                if line.startswith("-") and minus:
                    minus -= 1
                    continue
                if line.startswith("+") and plus:
                    hits += [Hit(commit, path, number, f.kind)
                             for f in scanner.line(line[1:], number)]
                    number, plus = number + 1, plus - 1
                    continue
                if line.startswith("\\"):   # "\ No newline at end of file"
                    continue
                minus = plus = 0            # cannot happen with git's counts; resync on headers
            if line.startswith("\x1e"):
                commit, path = line[1:], None
            elif line.startswith("+++ "):
                path = _path(line[4:])
            elif (m := _HUNK.match(line)) is not None:
                minus, number = int(m.group(1) or 1), int(m.group(2))
                plus = int(m.group(3) or 1)
    if proc.wait() != 0:
        raise RuntimeError("git log -p failed")
    return hits


def _path(raw: str) -> str:
    """A diff header's path without its `b/` prefix (C-quoted names unquoted)."""
    raw = raw.removesuffix("\t")   # git ends a name holding a space with a tab
    if raw.startswith('"') and raw.endswith('"'):
        raw = _unquote(raw[1:-1])
    return raw[2:] if raw.startswith("b/") else raw


def _unquote(text: str) -> str:
    out, i = bytearray(), 0
    escapes = {"n": 10, "t": 9, '"': 34, "\\": 92, "a": 7, "b": 8, "f": 12, "r": 13, "v": 11}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "0123" and re.match(r"[0-7]{3}", text[i + 1:i + 4]):
                out.append(int(text[i + 1:i + 4], 8))
                i += 4
                continue
            out.append(escapes.get(nxt, ord(nxt)))
            i += 2
            continue
        out += c.encode()
        i += 1
    return out.decode("utf-8", "replace")


def forward(update: Update, remote: str, branch: str) -> tuple[bool, str]:
    """Push `update.new` to Gitea's branch, leased on `update.old`; (accepted, what to say)."""
    lease = "" if update.old == ZERO else update.old
    done = subprocess.run(
        ["git", "push", "--porcelain", f"--force-with-lease=refs/heads/{branch}:{lease}",
         remote, f"{update.new}:refs/heads/{branch}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    if done.returncode == 0:
        return True, f"delivered {update.new[:12]} to Gitea as {branch}"
    refused = [ln.split("\t")[-1] for ln in done.stdout.splitlines() if ln.startswith("!\t")]
    errors = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
    reason = (refused or errors or [f"git push exited {done.returncode}"])[-1]
    return False, f"Gitea refused the push: {reason[:300]}"


def main() -> int:
    env = os.environ
    branch, remote = env.get("BOT_BOTTLE_GATE_BRANCH", ""), env.get("BOT_BOTTLE_GATE_REMOTE", "")
    known = json.loads(env.get("BOT_BOTTLE_GATE_KNOWN") or "{}")
    updates = parse_updates(sys.stdin.read())
    report = {"result": "refused", "branch": branch, "refs": [asdict(u) for u in updates],
              "reason": "", "findings": []}
    try:
        code, lines = _decide(updates, branch, remote, known, report)
    except Exception as exc:   # the push is refused, never let through unchecked
        code, lines = 1, [f"could not check the push: {exc}"]
        report.update(result="error", reason=lines[0])
    for line in lines:
        sys.stderr.write(PREFIX + line + "\n")
    sys.stderr.flush()
    path = env.get("BOT_BOTTLE_GATE_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(report, fh)
    return code


def _decide(updates, branch, remote, known, report) -> tuple[int, list[str]]:
    if not branch or not remote:
        report["reason"] = "the gate is not configured"
        return 1, ["refused: the gate is not configured"]
    problems = ref_problems(updates, branch)
    if problems:
        report["reason"] = "; ".join(problems)
        return 1, problems
    update = updates[0]
    if _git("cat-file", "-t", update.new).strip() != "commit":
        report["reason"] = f"{update.ref} must point at a commit"
        return 1, [f"refused {update.ref}: it must point at a commit"]
    count = int(_git("rev-list", "--count", update.new, "--not", "--all").strip() or 0)
    if count > MAX_COMMITS:
        report["reason"] = f"{count} new commits"
        return 1, [f"refused: {count} new commits in one push (at most {MAX_COMMITS}); "
                   "push in smaller steps"]
    hits = scan_push(update.new, known)
    if hits:
        report.update(reason="secret", findings=[asdict(h) for h in hits[:MAX_REPORTED]])
        more = [f"  ... and {len(hits) - MAX_REPORTED} more"] if len(hits) > MAX_REPORTED else []
        return 1, ["refused: the push holds what looks like a secret; nothing reached Gitea:",
                   *(f"  {h.describe()}" for h in hits[:MAX_REPORTED]), *more,
                   "remove it from every new commit (amend or rewrite them) and push again"]
    accepted, said = forward(update, remote, branch)
    report.update(result="pushed" if accepted else "failed", reason=said,
                  commits=count, new=update.new)
    return (0 if accepted else 1), [said]


if __name__ == "__main__":
    sys.exit(main())
