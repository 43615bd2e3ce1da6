"""The bridge's `seed` channel: the tar stream of a bottle's workspace/ and home/ that the
pod's `seed` container extracts (gate/pod_relay.py), read from disk only as fast as the pod
takes it, and the loop handler that writes it (`SeedPump`), a burst at a time so the other
connections of the bridge keep moving.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
import tarfile
from pathlib import Path

from ..gate.pod_relay import CHUNK, READ, WRITE, Goodbye, Loop

log = logging.getLogger("bot_bottle.backend.kube_bridge")
BURST = 16                    # seed chunks written per turn of the loop


SEED_TOPS = ("workspace", "home")


def seed_chunks(seed_dir: Path):
    """The tar stream of `seed_dir`'s workspace/ and home/, chunk by chunk, read from disk only
    as fast as it is taken: directories, regular files and symlinks (stored as symlinks), owner
    ids 0, no setuid/setgid/sticky bits; anything else (devices, fifos, sockets) is left out."""
    written = 0
    for top in SEED_TOPS:
        if (seed_dir / top).is_dir() and not (seed_dir / top).is_symlink():
            for chunk in _tree(seed_dir, top):
                written += len(chunk)
                yield chunk
    end = 2 * tarfile.BLOCKSIZE
    yield bytes(end + (-(written + end)) % tarfile.RECORDSIZE)


def _tree(root: Path, name: str):
    path = root / name
    st = os.lstat(path)
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode) & 0o777, int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        yield _header(info)
        for entry in sorted(os.listdir(path)):
            yield from _tree(root, f"{name}/{entry}")
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        yield _header(info)
    elif stat.S_ISREG(st.st_mode):
        yield from _file(path, info)
    else:
        log.warning("kube bridge: the seed leaves out %s (not a file, directory or symlink)", name)


def _file(path: Path, info: tarfile.TarInfo):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):   # swapped since the lstat: leave it out
            return
        info.size = left = st.st_size   # what the header promises is what is sent
        yield _header(info)
        while left:
            data = f.read(min(CHUNK, left)) or bytes(min(CHUNK, left))   # shrunk: zeros
            left -= len(data)
            yield data
    yield bytes(-info.size % tarfile.BLOCKSIZE)


def _header(info: tarfile.TarInfo) -> bytes:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class SeedPump:
    """Writes the seed's chunks to the pod as fast as it reads them, then says goodbye."""

    def __init__(self, loop: Loop, tls: ssl.SSLSocket, chunks, on_close):
        self.loop, self.tls, self.chunks, self.on_close = loop, tls, chunks, on_close
        self.pending, self.closed = b"", False
        loop.handlers.add(self)
        self.event(tls, 0)

    def event(self, sock, mask) -> None:
        for _ in range(BURST):   # then let the other connections have the thread
            while not self.pending:
                try:
                    self.pending = next(self.chunks, None)
                except OSError as exc:
                    log.warning("kube bridge: the seed failed: %s", exc)
                    self.close()
                    return
                if self.pending is None:
                    self._detach()
                    Goodbye(self.loop, self.tls, self.on_close)
                    return
            try:
                sent = self.tls.send(self.pending)
            except ssl.SSLWantWriteError:
                self.loop.watch(self.tls, WRITE, self)
                return
            except ssl.SSLWantReadError:
                self.loop.watch(self.tls, READ, self)
                return
            except OSError:
                self.close()
                return
            self.pending = self.pending[sent:]
        self.loop.watch(self.tls, WRITE, self)

    def _detach(self) -> None:
        self.closed = True
        self.loop.drop(self, self.tls)
        self.chunks.close()

    def close(self) -> None:
        if self.closed:
            return
        self._detach()
        self.tls.close()
        self.on_close()
