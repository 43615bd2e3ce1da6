"""Private by default: the directories and files bot-bottle keeps under $BOT_BOTTLE_HOME are
the owner's alone (directories 0700, files 0600), whatever the caller's umask.

`private_dir` makes (or narrows) a directory; `private_open` creates a file 0600 however it
existed before; `tighten` narrows an existing path that is wider than it should be and says
whether it did (the orchestrator logs one line per path it narrowed at start).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path` and any missing parents made 0700 (parents that exist are left as they are:
    they may be the user's own, like ~); `path` itself narrowed to 0700 if it was wider."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            pass
        os.chmod(d, DIR_MODE)   # mkdir's mode went through the umask
    tighten(path, DIR_MODE)
    return path


def private_open(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """An fd on `path` opened with `flags`; the file is 0600 afterwards (also when it existed)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten(path: Path, mode: int) -> bool:
    """Drop the bits beyond `mode` (group, other, setuid/setgid) from an existing `path` (never
    following a symlink); True when it changed anything, False when it was already narrow or
    is missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    current = stat.S_IMODE(st.st_mode)
    wanted = current & mode
    if wanted == current:
        return False
    os.chmod(path, wanted)
    return True
