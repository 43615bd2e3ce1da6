"""Sparse files in a snapshot: where a file's data lies (`os.lseek` SEEK_DATA / SEEK_HOLE) and
the tar member that stores only that data, in GNU tar's PAX sparse format 1.0.

tarfile reads that format (and extracts it with holes: it seeks over them and truncates to the
real size) but never writes it, so `sparse_member` builds it by hand: a PAX header with
`GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name` (the real name) and
`GNU.sparse.realsize` (the apparent size), a ustar name `GNUSparseFile.0/<base>` (what a tar
that knows no sparse files shows), and data that starts with the map — the number of
regions, then each region's offset and length, one decimal per line, padded to 512 bytes —
followed by the regions' bytes. GNU tar (`tar -x`) reads it too.

A member is written this way only when it saves space and its stored size fits the ustar
size field (< 8 GiB): a larger one needs a PAX `size` record, which Python's reader applies
after `GNU.sparse.realsize` and so misreads; such a file is stored in full instead. A file
with more than MAX_REGIONS regions keeps the first ones and stores the rest in full, so a
file of a million tiny fragments cannot make a map that is larger than its data.
"""

from __future__ import annotations

import copy
import errno
import os
import tarfile

BLOCK = tarfile.BLOCKSIZE
MAX_REGIONS = 1 << 16
USTAR_SIZE_LIMIT = 8 ** 11   # the 11 octal digits of the ustar size field


def data_map(fd: int, size: int, limit: int = MAX_REGIONS) -> list[tuple[int, int]]:
    """The (offset, length) regions of `fd` that hold data, up to `size`; holes left out; at
    most `limit` regions, the last one then running to the end. A file system without hole
    support reports one region: the whole file."""
    regions: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        if len(regions) == limit - 1:
            regions.append((pos, size - pos))   # the rest in full
            break
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:   # no data after pos: a hole to the end
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, size)] if size else []
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        regions.append((start, end - start))
        pos = end
    return regions


def map_block(regions: list[tuple[int, int]], size: int) -> bytes:
    """The map that starts the member's data, padded to whole blocks. A file ending in a hole
    gets a last, empty region at its end (as GNU tar writes it)."""
    if not regions or sum(regions[-1]) < size:
        regions = [*regions, (size, 0)]
    text = "".join(f"{o}\n{n}\n" for o, n in regions)
    raw = f"{len(regions)}\n{text}".encode("ascii")
    return raw + b"\0" * (-len(raw) % BLOCK)


def stored_size(regions: list[tuple[int, int]], size: int) -> int:
    """What the archive holds for a file of `size` with these regions: the map and the
    regions' bytes when written sparse, `size` when written in full."""
    data = sum(n for _o, n in regions)
    if data >= size:
        return size
    sparse = len(map_block(regions, size)) + data
    return sparse if sparse < min(size, USTAR_SIZE_LIMIT) else size


def worth_mapping(size: int, blocks: int) -> bool:
    """Whether a file of `size` bytes with `blocks` 512-byte blocks allocated may have holes
    (a cheap test before opening it; compression can say yes too, and the map then says no)."""
    return blocks * 512 < size


class _Data:
    """The member's data as tarfile reads it: the map, then each region read at its offset.
    A file that shrank under us reads as zeros (tarfile refuses a short read)."""

    def __init__(self, fd: int, head: bytes, regions: list[tuple[int, int]]):
        self.fd, self.head, self.regions, self.index, self.done = fd, head, regions, 0, 0

    def read(self, n: int) -> bytes:
        out = []
        while n > 0:
            if self.head:
                chunk, self.head = self.head[:n], self.head[n:]
            elif self.index < len(self.regions):
                offset, length = self.regions[self.index]
                want = min(n, length - self.done)
                chunk = os.pread(self.fd, want, offset + self.done) or b"\0" * want
                self.done += len(chunk)
                if self.done == length:
                    self.index, self.done = self.index + 1, 0
            else:
                break
            out.append(chunk)
            n -= len(chunk)
        return b"".join(out)


def sparse_member(info: tarfile.TarInfo, fd: int, regions: list[tuple[int, int]]):
    """(TarInfo, file object) for `tar.addfile` storing the regular file `fd` (described by
    `info`) as a PAX 1.0 sparse member; only when `stored_size` is below `info.size`."""
    head = map_block(regions, info.size)
    member = copy.copy(info)
    base = info.name.rsplit("/", 1)[-1]
    member.name = f"GNUSparseFile.0/{base}" if base.isascii() and len(base) <= 80 else \
        "GNUSparseFile.0/file"
    member.size = len(head) + sum(n for _o, n in regions)
    member.pax_headers = {**info.pax_headers, "GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                          "GNU.sparse.name": info.name, "GNU.sparse.realsize": str(info.size)}
    return member, _Data(fd, head, list(regions))
