"""Removing trees an agent made: `remove_tree(path)`.

`shutil.rmtree` recurses once per directory level (Python 3.11), so an agent's tree deeper than
the recursion limit stops it with a `RecursionError` that `ignore_errors` does not catch, and
a directory the agent made unreadable (mode 000) stops it with an error that it swallows,
leaving files behind. `rm -rf` has no depth limit; where it fails, the tree's directories are
first given back to their owner (`chmod -R u+rwX`, also without a depth limit) and it runs
again. Symbolic links are removed, never followed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import BackendError


def _run(argv: list[str]) -> str | None:
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode == 0:
        return None
    return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]


def remove_tree(path: Path | str, what: str = "the tree") -> None:
    """Remove `path` and everything under it; a BackendError (one line) when something stays."""
    path = str(path)
    if not os.path.lexists(path):
        return
    rm = shutil.which("rm") or "/bin/rm"
    if _run([rm, "-rf", "--", path]) is None:
        return
    if not os.path.islink(path):
        _run([shutil.which("chmod") or "/bin/chmod", "-R", "u+rwX", "--", path])
    why = _run([rm, "-rf", "--", path])
    if why is not None:
        raise BackendError(f"cannot remove {what} {path}: {why}")
