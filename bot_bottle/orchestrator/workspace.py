"""The issue's repository as the bottle's workspace: a host-side clone made for each launch.

`Workspaces.prepare(owner, repo, label)` runs on the run's worker thread before `bot-bottle
start`: it clones `{FORGE_GITEA_URL}/{owner}/{repo}.git` at its default branch (the remote
HEAD) into `$BOT_BOTTLE_HOME/checkouts/<slug>` (mode 0700; a stale one left by a crash is
removed first), creates branch `bot-bottle/<slug>` (tracking nothing), points `origin` at the
git gate (`http://127.0.0.1:3128/_git/<owner>/<repo>.git`: the egress gate relays it to the
orchestrator's git gate, `git_gate.py`, which alone pushes to Gitea) and returns the
directory, which the core CLI moves into the bottle as `/workspace` (`start --workspace DIR`). `discard` removes what
the CLI did not take (a start that failed before moving it). `FORGE_CLONE_WORKSPACE=0` turns
the whole thing off (bootstrap then passes no `Workspaces`).

The orchestrator's token reaches git only through each git command's environment, as an
`http.<FORGE_GITEA_URL>/.extraHeader` (GIT_CONFIG_COUNT/KEY/VALUE, so it is sent to Gitea
and nowhere else): never in argv (world-readable in /proc), never in a file, never in the
remote URL, so the checkout the agent gets carries no credential. No terminal prompt and no
credential helper: a refused token fails at once instead of waiting for input.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Mapping
from urllib.parse import quote

from bot_bottle.backend.sandbox import renice_group
from bot_bottle.errors import BotBottleError
from bot_bottle.gate import GIT_ROUTE_PREFIX, PROXY_URL
from bot_bottle.orchestrator.model import OrchestratorError
from bot_bottle.orchestrator.priority import niced
from bot_bottle.state import CHECKOUTS, slugify

# Gitea's owner and repository names (alphanumerics, `-`, `_`, `.`), never a path trick
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
BRANCH_PREFIX = "bot-bottle/"


class WorkspaceError(OrchestratorError):
    """The issue's repository could not be checked out; the message is safe to show."""


def check_names(owner: str, repo: str) -> None:
    for kind, name in (("owner", owner), ("repository", repo)):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise WorkspaceError(f"invalid {kind} name {name!r}")


def branch_for(label: str) -> str:
    """The run's branch, `bot-bottle/<slug>`: the one ref the git gate accepts from it."""
    try:
        return BRANCH_PREFIX + slugify(label)
    except BotBottleError as exc:
        raise WorkspaceError(str(exc)) from exc


def gate_remote(owner: str, repo: str) -> str:
    """The workspace's `origin` inside the bottle: the git gate, through the egress gate."""
    check_names(owner, repo)
    return f"{PROXY_URL}{GIT_ROUTE_PREFIX}{quote(owner)}/{quote(repo)}.git"


def token_env(env: Mapping[str, str], url: str, token: str) -> dict[str, str]:
    """`env` for a git command that talks to Gitea at `url` with `token`: the token as an
    extra header for that URL only, set through git's environment (never argv or a file), no
    credential helper and no prompt. Inherited by git's children (a hook among them)."""
    env = {k: v for k, v in env.items() if not k.startswith("GIT_CONFIG_")}
    env.update({
        "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "GIT_ASKPASS": "",
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"http.{url}/.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: token {token}",
        # an empty helper list: no stored credential is used, none is saved
        "GIT_CONFIG_KEY_1": "credential.helper", "GIT_CONFIG_VALUE_1": "",
    })
    return env


class Workspaces:
    def __init__(self, gitea_url: str, token: str, home: str | Path, *,
                 env: Mapping[str, str], timeout: float = 600.0, nice: int = 0) -> None:
        self._url = gitea_url.rstrip("/")
        self._token = token
        # absolute: `start --workspace` gets this path, and the CLI's cwd is not ours to assume
        self._root = Path(os.path.abspath(os.path.expanduser(str(home)))) / CHECKOUTS
        self._env = dict(env)
        self._timeout = timeout
        # a clone is a start's work: it yields to the service, as the CLI does
        self._nice, self._niced = nice, niced([], nice)   # `nice -n N` found once

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"Workspaces({self._url!r}, root={str(self._root)!r})"

    def clone_url(self, owner: str, repo: str) -> str:
        check_names(owner, repo)
        return f"{self._url}/{quote(owner)}/{quote(repo)}.git"

    def prepare(self, owner: str, repo: str, label: str) -> str:
        """Clone the repository for the run labelled `label`; the checkout's path."""
        url = self.clone_url(owner, repo)
        branch = branch_for(label)
        slug = branch[len(BRANCH_PREFIX):]
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._root, 0o700)
        dest = self._root / slug
        self.discard(dest)  # left by a crash, or by a start that never moved it
        dest.mkdir(mode=0o700)
        try:
            self._git(["clone", "--quiet", "--", url, str(dest)], f"clone {owner}/{repo}")
            self._git(["-C", str(dest), "checkout", "--quiet", "-b", branch],
                      f"create branch {branch} in {owner}/{repo}")
            self._git(["-C", str(dest), "remote", "set-url", "origin", gate_remote(owner, repo)],
                      f"point origin of {owner}/{repo} at the git gate")
        except BaseException:
            self.discard(dest)
            raise
        return str(dest)

    def discard(self, path: str | Path) -> None:
        path = Path(path)
        if path.parent != self._root:  # only ever a checkout of ours
            raise WorkspaceError(f"not a checkout: {path}")
        shutil.rmtree(path, ignore_errors=True)

    def _git_env(self) -> dict[str, str]:
        return token_env(self._env, self._url, self._token)

    def _git(self, args: list[str], what: str) -> None:
        try:
            proc = subprocess.Popen([*self._niced, "git", *args], env=self._git_env(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE,
                                    start_new_session=True)  # a timeout kills git's helpers too
        except FileNotFoundError as exc:
            raise WorkspaceError("git not found on PATH; install git") from exc
        except OSError as exc:
            raise WorkspaceError(f"cannot run git: {exc}") from exc
        renice_group(proc.pid, self._nice)
        try:
            _, err = proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise WorkspaceError(f"could not {what}: git took longer than "
                                 f"{self._timeout:g} s") from None
        if proc.returncode != 0:
            raise WorkspaceError(f"could not {what}: {self._reason(err, proc.returncode)}")

    def _reason(self, stderr: bytes, code: int) -> str:
        lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        picked = next((ln for ln in reversed(lines) if ln.startswith(("fatal:", "error:"))),
                      lines[-1] if lines else f"git exited {code}")
        if self._token:
            picked = picked.replace(self._token, "***")
        return picked[:300]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
