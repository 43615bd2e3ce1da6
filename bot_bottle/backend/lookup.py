"""Finding a program inside a bottle before the bottle exists, from its mounts.

A bottle sees only what is bound into it. `locate` walks the bottle's PATH the way execvp
does: a candidate counts when its path lies under a mount, the host file behind it is an
executable file, and its real target (symlinks followed on the host) also lies under a mount
(a `~/.local/bin/claude` pointing into `~/.local/share` needs that folder bound too).
Mounts whose host side does not exist yet (the workspace and home of a bottle being made)
cannot be checked; a program that may come from one of them is given the benefit of the doubt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Found:
    path: str | None            # the program's path inside the bottle; None if not found
    outside: str | None = None  # a candidate whose real target is not bound (for the message)
    unchecked: bool = False     # not found, but it may be in a mount that does not exist yet


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _host(path: str, mounts: list[dict]) -> tuple[str | None, bool]:
    """(host path behind the in-bottle `path`, checkable?) through the deepest mount."""
    best = None
    for m in mounts:
        if _under(path, m["dst"]) and (best is None or len(m["dst"]) > len(best["dst"])):
            best = m
    if best is None:
        return None, True
    if not os.path.exists(best["src"]):
        return None, False
    return best["src"] + path[len(best["dst"]):], True


def _visible(real: str, mounts: list[dict]) -> bool:
    return any(_under(real, os.path.realpath(m["src"])) for m in mounts if os.path.exists(m["src"]))


def locate(name: str, path_value: str, mounts: list[dict], cwd: str,
           can_execute: Callable[[str], bool] = lambda path: os.access(path, os.X_OK)) -> Found:
    """Where `name` (a bare name, or a path) resolves inside a bottle with these mounts;
    `can_execute(host path)`: whether the agent may run it (as root: the agent user's right)."""
    if "/" in name:
        candidates = [os.path.normpath(os.path.join(cwd, name))]
    else:
        candidates = [os.path.join(d, name) for d in path_value.split(":") if os.path.isabs(d)]
    outside = None
    unchecked = False
    for cand in candidates:
        host, checkable = _host(cand, mounts)
        if not checkable:
            unchecked = True
            continue
        if host is None or not os.path.isfile(host) or not can_execute(host):
            continue
        real = os.path.realpath(host)
        if _visible(real, mounts):
            return Found(cand)
        outside = outside or real
    return Found(None, outside, unchecked)
