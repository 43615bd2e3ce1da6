"""The people around a hostile agent in tests/integration/test_hostile_agent.py: the bottles'
agent user and a second, unprivileged local user, curious about the service's files.

`ensure_bottle_user()` makes `bot-bottle` (who bottles run as when the service is root) only if
it is missing (.ci/setup makes it), and says whether it did, so only its maker removes it.
`LocalUser` is made with a unique name and removed with its processes; `probe(...)` runs
`PROBE` as that user (its uid and gid, no supplementary groups) and returns what it could
read, list, connect to and execute, and where in /proc it found a needle. `exposed(home)`
lists what under a home a group or other user could read.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import stat
import subprocess
from pathlib import Path
from typing import Iterable

PYTHON = "/usr/bin/python3"
BOTTLE_USER = "bot-bottle"

# Run on the host by the unprivileged local user: every open, listing, connection and exec it
# is asked for, and a scan of every /proc/<pid>/cmdline and environ it can read for the
# needles (the run token, the service's secrets). Prints one JSON object.
PROBE = r'''
import errno, json, os, socket, subprocess, sys
req = json.load(sys.stdin)
def code(exc):
    return errno.errorcode.get(exc.errno, str(exc)) if isinstance(exc, OSError) else repr(exc)
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
       "read": {}, "list": {}, "connect": {}, "exec": {}}
for path in req.get("read", []):
    try:
        with open(path, "rb") as fh:
            out["read"][path] = "READ %d" % len(fh.read(1 << 20))
    except OSError as exc:
        out["read"][path] = code(exc)
for path in req.get("list", []):
    try:
        out["list"][path] = "LISTED %d" % len(os.listdir(path))
    except OSError as exc:
        out["list"][path] = code(exc)
for path in req.get("connect", []):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        out["connect"][path] = "CONNECTED"
    except OSError as exc:
        out["connect"][path] = code(exc)
    finally:
        s.close()
for path in req.get("exec", []):
    try:
        done = subprocess.run([path, "-u"], capture_output=True, text=True, timeout=10)
        out["exec"][path] = "RAN euid=" + done.stdout.strip()
    except OSError as exc:
        out["exec"][path] = code(exc)
needles = [n.encode() for n in req.get("needles", [])]
found, scanned = [], 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for part in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        scanned += 1
        if any(n in data for n in needles):
            found.append(f"/proc/{pid}/{part}")
out["proc_found"], out["proc_scanned"] = found, scanned
print(json.dumps(out))
'''


def _userdel(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True, timeout=60)
    # a user group left behind (USERGROUPS_ENAB off) goes too
    if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)


def ensure_bottle_user() -> bool:
    """`bot-bottle` exists afterwards; True if this call made it (so its caller removes it)."""
    try:
        pwd.getpwnam(BOTTLE_USER)
        return False
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                           "--shell", "/usr/sbin/nologin", BOTTLE_USER],
                          capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        pwd.getpwnam(BOTTLE_USER)  # made by someone else meanwhile; else fail loudly
        return False
    return True


def remove_bottle_user() -> None:
    _userdel(BOTTLE_USER)


class LocalUser:
    """A second, unprivileged local user, curious about the service's files."""

    def __init__(self) -> None:
        self.name = f"bbhostile{secrets.token_hex(4)}"
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", self.name], check=True, capture_output=True, timeout=60)
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def remove(self) -> None:
        # its processes are our probes (each bounded by a timeout); any left are killed first
        for pid in _pids_of(self.uid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _userdel(self.name)

    def probe(self, *, read: Iterable = (), listing: Iterable = (), connect: Iterable = (),
              execute: Iterable = (), needles: Iterable[str] = ()) -> dict:
        request = {"read": [str(p) for p in read], "list": [str(p) for p in listing],
                   "connect": [str(p) for p in connect], "exec": [str(p) for p in execute],
                   "needles": list(needles)}
        # the needles go on stdin: the probe's own argv is readable by everyone
        done = subprocess.run([PYTHON, "-I", "-c", PROBE], input=json.dumps(request),
                              capture_output=True, text=True, user=self.uid, group=self.gid,
                              extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"},
                              timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"the local user's probe failed: {done.stderr}")
        return json.loads(done.stdout)


def _pids_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def exposed(home: Path) -> list[str]:
    """Every path under `home` (itself included) that a group or other user could read or
    search. What an agent controls (a bottle's workspace and home, a checkout on its way into
    one) is not entered: the agent may chmod it as it likes; its ancestors are checked."""
    bad: list[str] = []

    def check(path: Path) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        mask = 0o055 if stat.S_ISDIR(st.st_mode) else 0o044
        if st.st_mode & mask:
            bad.append(f"{path} {stat.filemode(st.st_mode)}")

    check(home)
    for root, dirs, files in os.walk(home):
        here = Path(root)
        if here.name == "checkouts":  # each one a workspace on its way into a bottle
            agents = set(dirs)
        elif here.name == "bottle":
            agents = {"workspace", "home"} & set(dirs)
        else:
            agents = set()
        dirs[:] = [d for d in dirs if d not in agents]
        for name in [*dirs, *files]:
            try:
                check(here / name)
            except FileNotFoundError:  # removed by the running service meanwhile
                continue
    return bad
