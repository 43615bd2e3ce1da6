"""The git gate's per-run bare repositories, `$BOT_BOTTLE_HOME/gates/<slug>.git` (mode 0700).

Each mirrors two refs of the issue's Gitea repository: its default branch and the run's branch
`bot-bottle/<slug>`. Advertised to the agent's git, they make its push send only new objects
and its client see the truth (a non-fast-forward over what Gitea holds needs `--force`).
- `sync(run)` refreshes them from Gitea (`ls-remote`, then a fetch of what moved; a ref gone
  from Gitea goes here too) and returns what Gitea holds;
- `ahead(run)` counts the branch's commits the default branch does not have (after `sync`);
- `backend_env(run, report)` is the environment of `git http-backend` on the repository, which
  its pre-receive hook (`git_hook.py`) inherits: the run's branch, Gitea's URL, the report file,
  the known secret values, and Gitea's token as git's extra header for Gitea only;
- `discard(run)` removes the repository (the run is destroyed).
The token is only ever in a git command's environment (`workspace.token_env`): never in argv,
a file, the hook or a URL. Work on one run's repository is serialised by `lock(run)`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import bot_bottle
from bot_bottle.orchestrator.model import OrchestratorError, RunRecord
from bot_bottle.orchestrator.workspace import BRANCH_PREFIX, branch_for, check_names, token_env

GATES = "gates"
RUN_TOKEN_LABEL = "the run token"


class GitGateError(OrchestratorError):
    """A git command of the gate failed; the message is safe to show (the token redacted)."""


@dataclass(frozen=True)
class Remote:
    """What Gitea holds: its default branch (None for an empty repository) and the run's."""
    default: str | None
    branch: str
    branch_sha: str | None


def hook_script() -> str:
    """hooks/pre-receive: this interpreter running `git_hook.main()` from this package
    (isolated mode: the agent's data never picks what Python imports)."""
    parent = str(Path(bot_bottle.__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {parent!r}); "
            "from bot_bottle.orchestrator import git_hook; sys.exit(git_hook.main())")
    return f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -c {shlex.quote(code)}\n"


class GateRepos:
    def __init__(self, gitea_url: str, token: str, home: str | Path, *, env: Mapping[str, str],
                 known: Mapping[str, str] = (), timeout: float = 600.0) -> None:
        self._url = gitea_url.rstrip("/")
        self._token = token
        self.root = Path(os.path.abspath(os.path.expanduser(str(home)))) / GATES
        self._env = dict(env)
        self._known = dict(known)   # label -> value: FORGE_TOKEN, injected keys, ...
        self.timeout = timeout
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"GateRepos({self._url!r}, root={str(self.root)!r})"

    def lock(self, run: RunRecord) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(run.id, threading.Lock())

    def path(self, run: RunRecord) -> Path:
        return self.root / f"{branch_for(run.label)[len(BRANCH_PREFIX):]}.git"

    def remote_url(self, run: RunRecord) -> str:
        check_names(run.owner, run.repo)
        return f"{self._url}/{run.owner}/{run.repo}.git"

    def ensure(self, run: RunRecord) -> Path:
        """The run's repository, made on first use; its hook (re)written every time."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        path = self.path(run)
        if not (path / "HEAD").exists():
            self._git(["init", "--quiet", "--bare", str(path)], "create the gate repository")
            os.chmod(path, 0o700)
            for sample in (path / "hooks").glob("*.sample"):
                sample.unlink()
            # our hooks, whatever a global configuration says; no gc started by a push
            for key, value in (("core.hooksPath", str(path / "hooks")),
                               ("receive.autogc", "false")):
                self._git(["-C", str(path), "config", key, value], "configure the gate repository")
        hook = path / "hooks" / "pre-receive"
        hook.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = hook.with_name(".pre-receive.tmp")
        tmp.write_text(hook_script())
        os.chmod(tmp, 0o700)
        os.replace(tmp, hook)
        return path

    def sync(self, run: RunRecord) -> Remote:
        """Mirror Gitea's default branch and the run's branch (call under `lock(run)`)."""
        path = self.ensure(run)
        url, branch = self.remote_url(run), branch_for(run.label)
        listed = self._git(["ls-remote", "--symref", url, "HEAD", f"refs/heads/{branch}"],
                           f"list {run.owner}/{run.repo} on Gitea", token=True)
        default = head_sha = branch_sha = None
        for line in listed.splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: ") and name == "HEAD":
                default = left[5:].removeprefix("refs/heads/")
            elif name == "HEAD":
                head_sha = left
            elif name == f"refs/heads/{branch}":
                branch_sha = left
        want = {f"refs/heads/{default}": head_sha} if default and head_sha else {}
        if branch_sha:
            want[f"refs/heads/{branch}"] = branch_sha
        local = dict(line.split(" ", 1)[::-1] for line in self._git(
            ["-C", str(path), "for-each-ref", "--format=%(objectname) %(refname)"],
            "list the gate repository").splitlines())
        moved = [f"+{ref}:{ref}" for ref, sha in want.items() if local.get(ref) != sha]
        if moved:
            self._git(["-C", str(path), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                       url, *moved], f"fetch {run.owner}/{run.repo} from Gitea", token=True)
        for ref in set(local) - set(want):   # gone from Gitea (or a default branch renamed)
            self._git(["-C", str(path), "update-ref", "-d", ref], "prune the gate repository")
        if default:
            self._git(["-C", str(path), "symbolic-ref", "HEAD", f"refs/heads/{default}"],
                      "set the gate repository's HEAD")
        return Remote(default, branch, branch_sha)

    def ahead(self, run: RunRecord, remote: Remote) -> int:
        """Commits on the run's branch that the default branch lacks (0: no branch)."""
        if remote.branch_sha is None:
            return 0
        base = ["--not", f"refs/heads/{remote.default}"] if remote.default else []
        out = self._git(["-C", str(self.path(run)), "rev-list", "--count",
                         f"refs/heads/{remote.branch}", *base], "count the branch's commits")
        return int(out.strip() or 0)

    def backend_env(self, run: RunRecord, report: Path) -> dict[str, str]:
        env = token_env(self._env, self._url, self._token)
        env.update({
            "BOT_BOTTLE_GATE_BRANCH": branch_for(run.label),
            "BOT_BOTTLE_GATE_REMOTE": self.remote_url(run),
            "BOT_BOTTLE_GATE_REPORT": str(report),
            "BOT_BOTTLE_GATE_KNOWN": json.dumps({**self._known, RUN_TOKEN_LABEL: run.run_token}),
        })
        return env

    def discard(self, run: RunRecord) -> None:
        path = self.path(run)
        if path.parent == self.root:
            shutil.rmtree(path, ignore_errors=True)

    def _git(self, args: list[str], what: str, *, token: bool = False) -> str:
        env = token_env(self._env, self._url, self._token) if token else \
            {k: v for k, v in self._env.items() if not k.startswith("GIT_CONFIG_")}
        try:
            done = subprocess.run(["git", *args], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=self.timeout, start_new_session=True)
        except FileNotFoundError as exc:
            raise GitGateError("git not found on PATH; install git") from exc
        except subprocess.TimeoutExpired:
            raise GitGateError(f"could not {what}: git took longer than "
                               f"{self.timeout:g} s") from None
        if done.returncode != 0:
            lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if ln.startswith(("fatal:", "error:"))),
                          lines[-1] if lines else f"git exited {done.returncode}")
            if self._token:
                reason = reason.replace(self._token, "***")
            raise GitGateError(f"could not {what}: {reason[:300]}")
        return done.stdout
