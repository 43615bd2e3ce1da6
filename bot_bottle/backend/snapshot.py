"""A bottle's snapshot: `snapshots/latest.tar` of its workspace/ and home/, written so that
nothing dangerous goes in and nothing dangerous comes out.

Writing (`snapshot`): setuid/setgid bits (and sticky on files) are stripped and devices and
fifos left out (sockets are never archived), so a binary the agent made setuid never survives
a freeze. The file is 0600 in a 0700 directory, written to `latest.tmp`, synced and renamed:
a failure (a full disk) removes the temporary file and leaves the previous snapshot as it was.
Before writing, the apparent size of everything to archive is checked against a cap
(`BOT_BOTTLE_MAX_SNAPSHOT_BYTES`, default 10 GiB). tarfile cannot write sparse files (holes
become zeros), so a sparse file counts at its apparent size: a 20 GiB sparse file with no byte
used is refused at the default cap before anything is written, never written out as 20 GiB.

Reading (`restore_snapshot`): every member passes `_check`, which refuses absolute names, `..`,
a name that goes through a symlink already on disk (the agent's workspace may hold symlinks
pointing anywhere; they are restored as links, never followed), a hard link whose target is
outside the archive or a symlink, devices and fifos; and strips the high mode bits. On
3.11.4+ Python's own `tar` filter runs after it; on older Pythons (no `filter=`) ours is the
only one, member by member. Anything refused is a BackendError naming the member.
"""

from __future__ import annotations

import copy
import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from ..errors import BackendError, UsageError
from ..private import private_dir, private_open

HIGH_BITS = stat.S_ISUID | stat.S_ISGID
MAX_VAR = "BOT_BOTTLE_MAX_SNAPSHOT_BYTES"
DEFAULT_MAX = 10 * 1024 ** 3


def _strip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """tar.add's filter: no devices or fifos; no setuid/setgid, no sticky bit on files."""
    if info.ischr() or info.isblk() or info.isfifo():
        return None
    info.mode &= ~(HIGH_BITS | (0 if info.isdir() else stat.S_ISVTX))
    return info


def snapshot_cap(environ) -> int:
    """The cap on what a snapshot archives (MAX_VAR, a whole number of bytes)."""
    raw = environ.get(MAX_VAR)
    if raw is None:
        return DEFAULT_MAX
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{MAX_VAR} must be a whole number of bytes >= 1, got {raw!r}")
    return int(raw)


def archived_size(bottle_dir: Path) -> int:
    """What the tar of workspace/ and home/ holds: the apparent size of each regular file
    (a sparse file in full: tarfile writes its holes as zeros), each inode once."""
    total, seen = 0, set()
    for part in ("workspace", "home"):
        for root, _dirs, files in os.walk(bottle_dir / part):   # never follows symlinks
            for name in files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def snapshot(bottle_dir: Path, dest: Path, max_bytes: int = DEFAULT_MAX) -> None:
    """Tar workspace/ and home/ of bottle_dir into dest atomically. Over `max_bytes`, or when
    writing fails (a full disk), a BackendError; dest is then untouched and no temporary file
    is left."""
    size = archived_size(bottle_dir)
    if size > max_bytes:
        raise BackendError(f"snapshot refused: the bottle's workspace and home hold {size} bytes "
                           f"(apparent size, sparse files in full), over the cap of {max_bytes} "
                           f"bytes ({MAX_VAR}); the previous snapshot is kept")
    private_dir(dest.parent)
    tmp = dest.with_suffix(".tmp")
    try:
        with open(private_open(tmp), "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w") as tar:
                for part in ("workspace", "home"):
                    if (bottle_dir / part).exists():
                        tar.add(bottle_dir / part, arcname=part, filter=_strip)
            fh.flush()
            os.fsync(fh.fileno())   # the rename below must never expose a half-written file
        os.replace(tmp, dest)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise BackendError(f"snapshot failed: {exc.strerror or exc}; the previous snapshot "
                               f"is kept") from exc
        raise


def _refuse(info: tarfile.TarInfo, why: str) -> BackendError:
    return BackendError(f"snapshot member {info.name!r} refused: {why}")


def _inside(dest: Path, name: str, info: tarfile.TarInfo) -> Path:
    """dest/name, after checking that name is relative, has no `..` and that no directory on
    the way is a symlink (so writing it can only land under dest)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or os.path.isabs(name):
        raise _refuse(info, "absolute name")
    if ".." in parts:
        raise _refuse(info, "'..' in the name")
    path = dest
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise _refuse(info, f"goes through the symlink {part!r}")
    return dest.joinpath(*parts)


def _check(info: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Our filter (see the module's docstring); returns a copy with the high bits stripped."""
    root = Path(dest)
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        raise _refuse(info, "not a regular file, directory or link")
    _inside(root, info.name, info)
    if info.islnk():
        target = _inside(root, info.linkname, info)
        if target.is_symlink() or not target.exists():
            raise _refuse(info, "hard link to a symlink or to nothing archived before it")
    safe = copy.copy(info)
    safe.mode = info.mode & ~(HIGH_BITS | stat.S_ISVTX) & 0o7777
    return safe


def _filter(info: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    return tarfile.tar_filter(_check(info, dest), dest)


def restore_snapshot(src: Path, bottle_dir: Path, *,
                     builtin_filter: bool = hasattr(tarfile, "tar_filter")) -> None:
    """Replace workspace/ and home/ of bottle_dir with the snapshot's."""
    for part in ("workspace", "home"):
        shutil.rmtree(bottle_dir / part, ignore_errors=True)
    bottle_dir.mkdir(parents=True, exist_ok=True)
    dest = str(bottle_dir)
    with tarfile.open(src) as tar:
        if builtin_filter:   # 3.11.4+
            try:
                tar.extractall(dest, filter=_filter)
            except tarfile.FilterError as exc:
                raise BackendError(f"snapshot member refused: {exc}") from exc
            return
        # older Pythons: extractall has no filter; ours checks each member just before it is
        # written (a lazy generator: symlinks extracted before it are on disk by then)
        checked = (_check(info, dest) for info in tar)
        if hasattr(tarfile, "tar_filter"):   # (tests on 3.11.4+: checked, no warning)
            tar.extractall(dest, members=checked, filter="fully_trusted")
        else:
            tar.extractall(dest, members=checked)
