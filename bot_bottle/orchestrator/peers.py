"""Which bottle a connection to the sidecar socket comes from, for its per-bottle cap.

Token-less connections name no run, so the caller is found from the kernel's side:
`SO_PEERCRED` gives the connecting process's pid, and its parents are walked (`/proc/<pid>/stat`,
readable for every process) up to a direct child of this service: the core CLI that runs that
bottle (bwrap, the agent and everything it forks descend from it; the CLI's own egress gate
relaying a push is that child itself). A process that descends from no child of ours within
`MAX_DEPTH` parents (a pid gone by now, a chain made deep on purpose) shares one `OTHER` key,
so it can crowd out only others like it.
"""

from __future__ import annotations

import os
import socket
import struct

OTHER = "other"
MAX_DEPTH = 64
_UCRED = struct.Struct("3i")  # pid, uid, gid


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def child_of_ours(pid: int, me: int | None = None, max_depth: int = MAX_DEPTH) -> int | None:
    """The pid of this process's direct child that `pid` is or descends from, else None."""
    me = os.getpid() if me is None else me
    for _ in range(max_depth):
        parent = parent_of(pid)
        if parent is None or parent <= 1:
            return None
        if parent == me:
            return pid
        pid = parent
    return None


def bottle_key(conn: socket.socket) -> int | str:
    """The key a sidecar connection is counted under: its bottle's CLI pid, or `OTHER`."""
    try:
        pid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _UCRED.size))[0]
    except OSError:
        return OTHER
    if pid <= 0:
        return OTHER
    return child_of_ours(pid) or OTHER
