"""A bottle's snapshot: `snapshots/latest.tar` of its workspace/ and home/, written so that
nothing dangerous goes in, nothing dangerous comes out, and a failure changes nothing.

Writing (`snapshot`): setuid/setgid bits (and sticky on files) are stripped and devices and
fifos left out (sockets are never archived), so a binary the agent made setuid never survives
a freeze. Sparse files stay sparse: only their data is stored (`sparse.py`, GNU's PAX sparse
format), so a 20 GiB file with nothing written in it costs a few blocks, and restoring it
makes it sparse again. What is stored — each regular file's data, holes left out, each inode
once — is checked against a cap (`BOT_BOTTLE_MAX_SNAPSHOT_BYTES`, default 10 GiB) before
anything is written, and again as it is written (a file that grew meanwhile). The archive is
written to an unnamed file in snapshots/ (O_TMPFILE: nothing to clean up even if the process
is killed; `latest.tmp` where the file system has none), synced, named `latest.tmp` and renamed
over `latest.tar` (0600, directory 0700). Any failure — the cap, a full disk, a file that
cannot be read — is one BackendError line; the previous `latest.tar` is then untouched and no
temporary file is left (a `latest.tmp` a killed process left behind is removed next time).

Reading (`restore_snapshot`): workspace/ and home/ are cleared first (by `rm -rf`, which,
unlike shutil.rmtree, has no depth limit); then every member passes `_check`, which refuses
absolute names, `..`, a name that goes through a symlink already on disk (the agent's
workspace may hold symlinks pointing anywhere; they are restored as links, never followed),
a hard link whose target is outside the archive or a symlink, devices and fifos; and strips
the high mode bits and group/other write (what Python's own `tar` filter does, which is not
run as well: its `realpath` of every member made a tree 1,000 deep take a minute). Directories
already checked to be real directories are remembered for the rest of the restore (a real
directory is never replaced during extraction), so each member costs what its new parts cost.
On 3.11.4+ `extractall(filter=...)` runs `_check`; on older Pythons it checks member by member.
Anything refused is a BackendError naming the member. Sparse members come back sparse
(tarfile seeks over their holes).
"""

from __future__ import annotations

import copy
import errno
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

from ..errors import BackendError, UsageError
from ..private import FILE_MODE, private_dir, private_open
from ..trees import remove_tree
from . import sparse

HIGH_BITS = stat.S_ISUID | stat.S_ISGID
MAX_VAR = "BOT_BOTTLE_MAX_SNAPSHOT_BYTES"
DEFAULT_MAX = 10 * 1024 ** 3
PARTS = ("workspace", "home")
COPY_BUFFER = 1024 * 1024


def _strip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """No devices or fifos; no setuid/setgid, no sticky bit on files."""
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


def _walk(bottle_dir: Path):
    """(path, name in the archive, lstat) of workspace/, home/ and all under them, parents
    first, names sorted; never follows a symlink, and uses no recursion (an agent's tree can
    be deeper than Python's recursion limit)."""
    stack = [(str(bottle_dir / p), p) for p in reversed(PARTS)]
    while stack:
        path, arcname = stack.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        yield path, arcname, st
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path), reverse=True):
                stack.append((os.path.join(path, name), f"{arcname}/{name}"))


def _open(path: str) -> int:
    # O_NOFOLLOW/O_NONBLOCK: what was a regular file at lstat cannot turn into a symlink we
    # follow or a fifo we block on
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _stored(fd: int | None, path: str, size: int, blocks: int):
    """(bytes stored for a regular file of `size` bytes with `blocks` 512-byte blocks
    allocated, its data regions or None when stored in full); `fd` None: opened here."""
    if not sparse.worth_mapping(size, blocks):
        return size, None
    own = fd is None
    fd = _open(path) if own else fd
    try:
        regions = sparse.data_map(fd, size)
    finally:
        if own:
            os.close(fd)
    stored = sparse.stored_size(regions, size)
    return stored, (regions if stored < size else None)


def archived_size(bottle_dir: Path) -> int:
    """What a snapshot of bottle_dir stores: each regular file's data (holes left out), each
    inode once."""
    total, seen = 0, set()
    for path, _arcname, st in _walk(bottle_dir):
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += _stored(None, path, st.st_size, st.st_blocks)[0]
    return total


def _over(size: int, max_bytes: int) -> BackendError:
    return BackendError(f"snapshot refused: the bottle's workspace and home hold {size} bytes "
                        f"of data (holes in sparse files not counted), over the cap of "
                        f"{max_bytes} bytes ({MAX_VAR}); the previous snapshot is kept")


def _write(tar: tarfile.TarFile, bottle_dir: Path, max_bytes: int) -> None:
    total = 0
    for path, arcname, st in _walk(bottle_dir):
        if not stat.S_ISREG(st.st_mode):
            info = tar.gettarinfo(path, arcname)   # None for a socket
            if info is not None and _strip(info) is not None:
                tar.addfile(info)
            continue
        with open(_open(path), "rb") as fh:
            info = tar.gettarinfo(arcname=arcname, fileobj=fh)
            if info is None or _strip(info) is None:   # no longer a regular file
                continue
            if not info.isreg():   # a hard link to a file archived before: no data
                tar.addfile(info)
                continue
            # info.size: the map and the data must agree with the size in the header
            size, regions = _stored(fh.fileno(), path, info.size, os.fstat(fh.fileno()).st_blocks)
            total += size
            if total > max_bytes:
                raise _over(total, max_bytes)
            if regions is None:
                tar.addfile(info, fh)
            else:
                tar.addfile(*sparse.sparse_member(info, fh.fileno(), regions))


def _temp(directory: Path, named: Path, unnamed: bool) -> tuple[int, bool]:
    """(fd to write the archive to, whether it is unnamed)."""
    if unnamed:
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            os.fchmod(fd, FILE_MODE)
            return fd, True
    return private_open(named, os.O_WRONLY | os.O_CREAT | os.O_EXCL), False


def _name(fd: int, path: Path) -> None:
    """Give the unnamed file `fd` the name `path` (linkat through /proc/self/fd, following
    that link: the only way without CAP_DAC_READ_SEARCH; os.link needs a dir fd to use
    linkat at all)."""
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), path, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _why(exc: OSError, bottle_dir: Path) -> str:
    """One line for an OSError: its reason and, for a file of the bottle, the file's name."""
    why = exc.strerror or str(exc)
    name = exc.filename
    if isinstance(name, str) and name.startswith(str(bottle_dir) + os.sep):
        rel = name[len(str(bottle_dir)) + 1:]
        if len(rel) > 200:   # a path past PATH_MAX is the usual reason for it to be long
            rel = f"{rel[:100]}...{rel[-60:]}"
        why += f" ({rel!r})"   # repr: a name can hold newlines
    return why


def snapshot(bottle_dir: Path, dest: Path, max_bytes: int = DEFAULT_MAX, *,
             unnamed: bool = True) -> None:
    """Tar workspace/ and home/ of bottle_dir into dest atomically. Over `max_bytes`, or when
    anything fails (a full disk, an unreadable file), a BackendError; dest is then untouched
    and no temporary file is left. `unnamed=False` skips O_TMPFILE (tests of the fallback)."""
    tmp = dest.with_suffix(".tmp")
    try:
        _unlink(tmp)   # a killed snapshot's leftover (named fallback)
        size = archived_size(bottle_dir)
        if size > max_bytes:
            raise _over(size, max_bytes)
        private_dir(dest.parent)
        fd, without_name = _temp(dest.parent, tmp, unnamed)
        try:
            with open(fd, "wb") as fh:
                with tarfile.open(fileobj=fh, mode="w", copybufsize=COPY_BUFFER) as tar:
                    _write(tar, bottle_dir, max_bytes)
                fh.flush()
                os.fsync(fh.fileno())   # the rename below must never expose a half-written file
                if without_name:
                    _name(fh.fileno(), tmp)
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise
        _sync_dir(dest.parent)
    except (OSError, ValueError, tarfile.TarError) as exc:   # ValueError: tarfile's headers
        why = _why(exc, bottle_dir) if isinstance(exc, OSError) else str(exc)
        raise BackendError(f"snapshot failed: {why}; the previous snapshot is kept") from exc


def _sync_dir(directory: Path) -> None:
    """The rename itself survives a crash (best effort: the snapshot is already in place)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse(info: tarfile.TarInfo, why: str) -> BackendError:
    return BackendError(f"snapshot member {info.name!r} refused: {why}")


def _inside(dest: Path, name: str, info: tarfile.TarInfo, real_dirs: set) -> Path:
    """dest/name, after checking that name is relative, has no `..` and that no directory on
    the way is a symlink (so writing it can only land under dest). `real_dirs`: the relative
    paths already found to be real directories in this restore (not looked at again)."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or os.path.isabs(name):
        raise _refuse(info, "absolute name")
    if ".." in parts:
        raise _refuse(info, "'..' in the name")
    known = len(parts) - 1   # the deepest parent already checked (usually the last member's)
    while known > 0 and parts[:known] not in real_dirs:
        known -= 1
    for depth in range(known + 1, len(parts)):
        prefix = parts[:depth]
        try:
            mode = os.lstat(os.path.join(dest, *prefix)).st_mode
        except FileNotFoundError:   # made by a later member: checked again then
            continue
        if stat.S_ISLNK(mode):
            raise _refuse(info, f"goes through the symlink {parts[depth - 1]!r}")
        if stat.S_ISDIR(mode):
            real_dirs.add(prefix)
    return dest.joinpath(*parts)


def _check(info: tarfile.TarInfo, dest: str, real_dirs: set) -> tarfile.TarInfo:
    """Our filter (see the module's docstring); returns a copy with the high bits and
    group/other write stripped."""
    root = Path(dest)
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        raise _refuse(info, "not a regular file, directory or link")
    _inside(root, info.name, info, real_dirs)
    if info.islnk():
        target = _inside(root, info.linkname, info, real_dirs)
        if target.is_symlink() or not target.exists():
            raise _refuse(info, "hard link to a symlink or to nothing archived before it")
    safe = copy.copy(info)
    safe.mode = info.mode & ~(HIGH_BITS | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH) & 0o7777
    return safe


def restore_snapshot(src: Path, bottle_dir: Path, *,
                     builtin_filter: bool = hasattr(tarfile, "tar_filter")) -> None:
    """Replace workspace/ and home/ of bottle_dir with the snapshot's."""
    for part in PARTS:
        remove_tree(bottle_dir / part, "the bottle's old " + part)
    bottle_dir.mkdir(parents=True, exist_ok=True)
    dest = str(bottle_dir)
    real_dirs: set = set()
    with tarfile.open(src) as tar:
        if builtin_filter:   # 3.11.4+
            try:
                tar.extractall(dest, filter=lambda info, path: _check(info, path, real_dirs))
            except tarfile.FilterError as exc:
                raise BackendError(f"snapshot member refused: {exc}") from exc
            return
        # older Pythons: extractall has no filter; ours checks each member just before it is
        # written (a lazy generator: symlinks extracted before it are on disk by then)
        checked = (_check(info, dest, real_dirs) for info in tar)
        if hasattr(tarfile, "tar_filter"):   # (tests on 3.11.4+: checked, no warning)
            tar.extractall(dest, members=checked, filter="fully_trusted")
        else:
            tar.extractall(dest, members=checked)
