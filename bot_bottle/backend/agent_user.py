"""Who the agent runs as when the CLI runs as root: never host root, but a dedicated
unprivileged system user, `BOT_BOTTLE_AGENT_USER` (default `bot-bottle`).

Not root, nothing changes: bwrap's user namespace maps the caller's own uid into the bottle.
As root, bwrap mounts without a user namespace and the bottle's first process drops to that
user (`drop_argv`: util-linux `setpriv`: its uid and gid, no supplementary groups, no
capabilities, bounding set cleared, no_new_privs) before anything of the agent runs. What
the bottle must write or reach is then given to that user, mode kept:
- `own(tree)`: the workspace and home, recursively, before every run (after a fill, a restore,
  the provider's home setup) — never following a symlink, and leaving alone a file with
  several hard links (another of its names may be outside the bottle: giving it away would
  let the agent rewrite that one);
- `grant(path)`: one socket or file bound in (the egress gate's socket, the prompt file; the
  orchestrator's forge sidecar socket, through this same function), still 0600 — reachable
  by the agent user and root only.
A user that does not exist fails `check` (called before anything is created, and by the
orchestrator at start-up) with one line naming the fix.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError, UsageError

USER_VAR = "BOT_BOTTLE_AGENT_USER"
DEFAULT_USER = "bot-bottle"
# a portable user name (what useradd accepts without --badname): it also lands in the error line
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}[$]?")
# setpriv is looked up here only, all of them bound read-only into every bottle
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class AgentUser:
    name: str
    uid: int
    gid: int


def create_command(name: str) -> str:
    return f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name}"


def check(environ, euid: int | None = None) -> AgentUser | None:
    """The user bottles run as: None when the caller is not root (`euid`, default ours);
    a UsageError for a bad `BOT_BOTTLE_AGENT_USER`, a BackendError when the user is missing."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    name = environ.get(USER_VAR) or DEFAULT_USER
    if not _NAME.fullmatch(name):
        raise UsageError(f"{USER_VAR} must be a user name ([a-z_][a-z0-9_-]*, at most 32 "
                         f"characters), got {name!r}")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise BackendError(f"running as root, bottles run as the unprivileged user {name!r}, "
                           f"which does not exist; create it: {create_command(name)} "
                           f"(or set {USER_VAR})") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise UsageError(f"{USER_VAR}: user {name!r} has uid {entry.pw_uid} and gid "
                         f"{entry.pw_gid}; bottles must run as an unprivileged user (not uid or "
                         f"gid 0): {create_command(DEFAULT_USER)}")
    return AgentUser(name, entry.pw_uid, entry.pw_gid)


def can_execute(path: str, user: AgentUser | None) -> bool:
    """Whether the bottle's agent may execute the file at `path`: the caller's own right when
    it is not root, else the agent user's by the file's mode bits (root may execute any file
    with an x bit, the agent user only what its owner, group or other bits allow it)."""
    if user is None:
        return os.access(path, os.X_OK)
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def drop_argv(user: AgentUser) -> list[str]:
    """The prefix that runs the bottle's argv as `user`: no groups, capabilities or new
    privileges (setpriv exits 127 or fails the exec rather than run anything as root)."""
    exe = shutil.which("setpriv", path=SYSTEM_PATH)
    if not exe:
        raise BackendError("setpriv (util-linux) not found in /usr/bin or /bin; "
                           "install it: apt-get install util-linux")
    return [exe, "--reuid", str(user.uid), "--regid", str(user.gid), "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _give(name, user: AgentUser, st: os.stat_result, dir_fd=None) -> None:
    if (st.st_uid, st.st_gid) == (user.uid, user.gid):
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return   # see the module's docstring
    # chown clears setuid/setgid on a file, whoever calls it (Linux >= 2.2.13)
    os.chown(name, user.uid, user.gid, dir_fd=dir_fd, follow_symlinks=False)


def own(top: Path, user: AgentUser | None) -> None:
    """Give the tree `top` (a directory the CLI made) to `user`; nothing when None."""
    if user is None:
        return
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise BackendError(f"{top} is not a directory")
    _give(top, user, st)
    # fwalk(follow_symlinks=False) descends only into real directories, by file descriptor,
    # so a name swapped for a symlink midway is never followed
    for _root, dirs, files, fd in os.fwalk(top, follow_symlinks=False):
        for name in dirs + files:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            _give(name, user, st, fd)


def give(path, user: AgentUser | None) -> None:
    """The socket or file `path`, to `user` only: its owner, mode 0600; nothing when None."""
    if user is None:
        return
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not (stat.S_ISSOCK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise BackendError(f"{path}: not a socket or regular file, not given to the agent user")
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    os.chmod(path, 0o600)


def grant(path, environ) -> None:
    """Make the socket or file `path` reachable by the agent user (and root) only, when the
    caller is root (else the bottle runs as the caller, who owns it already): for the
    orchestrator's forge sidecar socket, once it is made. `environ`: what the CLI gets."""
    give(path, check(environ))
