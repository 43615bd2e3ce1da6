"""Snapshots store sparse files sparsely and fail cleanly.

Sparse: `sparse.data_map` finds a file's data with SEEK_DATA/SEEK_HOLE; a snapshot stores
only that data (GNU's PAX sparse format 1.0) and a restore — ours, and GNU tar's — gives back
the same bytes, the same size and the holes; the cap counts the data, not the apparent size.
Failures: a full disk (a real tmpfs), an unreadable file (as an unprivileged user), the cap
reached while writing, a `latest.tmp` a killed snapshot left — each leaves only the previous
`latest.tar`, unchanged and restorable, with the unnamed (O_TMPFILE) temporary file and with
the named fallback alike. No setuid/setgid bit survives a snapshot and a restore of real files.
"""

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend import snapshot as snap
from bot_bottle.backend import sparse
from bot_bottle.errors import BackendError

MIB = 1024 * 1024
GIB = 1024 * MIB
REPO_ROOT = Path(__file__).resolve().parents[2]


def make_file(path: Path, size: int, writes=()) -> None:
    """A file of `size` bytes, all hole but `writes` [(offset, bytes)]."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in writes:
            fh.seek(offset)
            fh.write(data)


class Tmp(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.bottle = self.root / "bottle"
        self.ws = self.bottle / "workspace"
        self.ws.mkdir(parents=True)
        (self.bottle / "home").mkdir()
        self.dest = self.root / "snapshots" / "latest.tar"


class DataMapTest(Tmp):
    def regions(self, path: Path, **kw):
        fd = os.open(path, os.O_RDONLY)
        try:
            return sparse.data_map(fd, os.fstat(fd).st_size, **kw)
        finally:
            os.close(fd)

    def test_the_data_is_found_and_the_holes_left_out(self):
        writes = [(8 * MIB, b"x" * 10), (16 * MIB - 4096, os.urandom(4096))]
        make_file(self.ws / "f", 16 * MIB, writes)
        regions = self.regions(self.ws / "f")
        for offset, data in writes:
            self.assertTrue(any(o <= offset and offset + len(data) <= o + n for o, n in regions),
                            (offset, regions))
        self.assertLess(sum(n for _o, n in regions), MIB)
        self.assertEqual(sum(regions[-1]), 16 * MIB)   # ends in data

    def test_dense_empty_and_all_hole_files(self):
        (self.ws / "dense").write_bytes(b"y" * 10000)
        (self.ws / "empty").write_bytes(b"")
        make_file(self.ws / "hole", 20 * GIB)
        self.assertEqual(self.regions(self.ws / "dense"), [(0, 10000)])
        self.assertEqual(self.regions(self.ws / "empty"), [])
        self.assertEqual(self.regions(self.ws / "hole"), [])

    def test_past_the_region_limit_the_rest_is_one_region(self):
        make_file(self.ws / "f", 8 * MIB, [(i * MIB, b"z") for i in range(6)])
        full, capped = self.regions(self.ws / "f"), self.regions(self.ws / "f", limit=3)
        self.assertEqual(len(full), 6)
        self.assertEqual(capped, [*full[:2], (sum(full[1]), 8 * MIB - sum(full[1]))])

    def test_stored_size(self):
        self.assertEqual(sparse.stored_size([(0, 100)], 100), 100)                  # dense
        self.assertEqual(sparse.stored_size([(0, 10)], 20 * GIB), 512 + 10)         # map + data
        self.assertEqual(sparse.stored_size([], 20 * GIB), 512)
        # a sparse member of 8 GiB or more would need a PAX size record: stored in full
        self.assertEqual(sparse.stored_size([(0, 9 * GIB)], 20 * GIB), 20 * GIB)


class RoundTripTest(Tmp):
    SHAPES = {   # name -> (size, writes)
        "hole-then-data": (16 * MIB, [(12 * MIB, b"tail")]),
        "data-then-hole": (16 * MIB, [(0, b"head" * 3000)]),
        "both ends": (16 * MIB, [(0, b"a"), (16 * MIB - 1, b"b")]),
        "all hole": (20 * GIB, []),
        "empty": (0, []),
        "dense": (50000, [(0, os.urandom(50000))]),
        "naïve\nname": (4 * MIB, [(MIB, b"newline and non-ASCII in the name")]),
    }

    def make_shapes(self):
        for name, (size, writes) in self.SHAPES.items():
            make_file(self.ws / name, size, writes)
        os.link(self.ws / "hole-then-data", self.ws / "hard link")
        make_file(self.ws / "suid", 8 * MIB, [(MIB, b"#!/bin/sh\n")])
        os.chmod(self.ws / "suid", 0o6755)
        (self.ws / "sgid").write_bytes(b"dense")
        os.chmod(self.ws / "sgid", 0o2750)
        (self.bottle / "home" / "d").mkdir()
        make_file(self.bottle / "home" / "d" / "deep", 8 * MIB, [(7 * MIB, b"deep")])

    def assert_same(self, restored: Path):
        for rel in [*self.SHAPES, "hard link", "suid"]:
            with self.subTest(file=rel):
                a, b = self.ws / rel, restored / "workspace" / rel
                sa, sb = os.stat(a), os.stat(b)
                self.assertEqual(sb.st_size, sa.st_size)
                self.assertLessEqual(sb.st_blocks, sa.st_blocks + 8)   # holes kept
                if sa.st_size <= 16 * MIB:
                    self.assertEqual(b.read_bytes(), a.read_bytes())
        self.assertEqual(os.stat(restored / "workspace" / "hard link").st_ino,
                         os.stat(restored / "workspace" / "hole-then-data").st_ino)
        self.assertEqual((restored / "home" / "d" / "deep").read_bytes(),
                         (self.bottle / "home" / "d" / "deep").read_bytes())

    def test_snapshot_is_small_and_both_restores_give_back_the_same_sparse_files(self):
        self.make_shapes()
        snap.snapshot(self.bottle, self.dest)
        self.assertLess(self.dest.stat().st_size, MIB)
        with tarfile.open(self.dest) as tar:
            sparse_members = {m.name for m in tar if m.sparse is not None}
            high = [m.name for m in tar if m.mode & (stat.S_ISUID | stat.S_ISGID)]
        self.assertEqual(high, [])
        self.assertIn("workspace/all hole", sparse_members)
        self.assertNotIn("workspace/dense", sparse_members)
        ours = self.root / "ours"
        snap.restore_snapshot(self.dest, ours)
        self.assert_same(ours)
        modes = {n: stat.S_IMODE(os.stat(ours / "workspace" / n).st_mode) for n in ("suid", "sgid")}
        self.assertEqual(modes, {"suid": 0o755, "sgid": 0o750})   # a sparse member's too
        gnu = self.root / "gnu"
        gnu.mkdir()
        r = subprocess.run(["tar", "-xf", str(self.dest), "-C", str(gnu)], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_same(gnu)

    def test_a_capped_map_still_round_trips(self):
        make_file(self.ws / "f", 8 * MIB, [(i * MIB, bytes([65 + i])) for i in range(6)])
        fd = os.open(self.ws / "f", os.O_RDONLY)
        self.addCleanup(os.close, fd)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            top = tarfile.TarInfo("workspace")
            top.type, top.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(top)
            info = tar.gettarinfo(self.ws / "f", "workspace/f")
            tar.addfile(*sparse.sparse_member(info, fd, sparse.data_map(fd, 8 * MIB, limit=3)))
        self.dest.parent.mkdir()
        self.dest.write_bytes(buf.getvalue())
        snap.restore_snapshot(self.dest, self.root / "out")
        self.assertEqual((self.root / "out" / "workspace" / "f").read_bytes(),
                         (self.ws / "f").read_bytes())

    def test_the_cap_counts_data_not_apparent_size(self):
        make_file(self.ws / "big", 20 * GIB, [(GIB, b"x" * 8192)])
        self.assertLess(snap.archived_size(self.bottle), 64 * 1024)
        snap.snapshot(self.bottle, self.dest, max_bytes=MIB)   # 20 GiB apparent, fine
        self.assertLess(self.dest.stat().st_size, MIB)

    def test_a_tree_deeper_than_the_recursion_limit_is_snapshotted_and_cleared(self):
        # rm: shutil.rmtree (the temp dir's cleanup) recurses once per level too
        self.addCleanup(subprocess.run, ["rm", "-rf", "--", str(self.ws)], check=True)
        deep = str(self.ws)
        for _ in range(sys.getrecursionlimit() + 100):
            deep += "/d"
            os.mkdir(deep)
        deep = Path(deep)
        (deep / "leaf").write_text("bottom")
        snap.snapshot(self.bottle, self.dest)
        with tarfile.open(self.dest) as tar:
            names = tar.getnames()
        self.assertTrue(any(n.endswith("/d/leaf") for n in names))
        # a restore clears the deep tree first (restoring one is slow, not refused: every
        # member's directories are checked, ours and Python's filter, O(depth) each)
        small = self.root / "small"
        (small / "workspace").mkdir(parents=True)
        (small / "workspace" / "kept").write_text("small")
        snap.snapshot(small, self.root / "small.tar")
        snap.restore_snapshot(self.root / "small.tar", self.bottle)
        self.assertEqual(os.listdir(self.ws), ["kept"])


def child_snapshot(bottle: Path, dest: Path, unnamed: bool, *, no_caps=False, fsize=None):
    """snapshot() in a child process (root without capabilities — so a mode 000 file is
    unreadable — or under a file-size limit): its exit code (3: BackendError) and output."""
    code = ("import resource, sys; from pathlib import Path\n"
            f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "from bot_bottle.backend.snapshot import snapshot\n"
            "from bot_bottle.errors import BackendError\n"
            f"if {fsize!r}: resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize!r}, {fsize!r}))\n"
            "try:\n"
            f"    snapshot(Path({str(bottle)!r}), Path({str(dest)!r}), unnamed={unnamed!r})\n"
            "except BackendError as exc:\n"
            "    print(exc); sys.exit(3)\n")
    drop = ["setpriv", "--bounding-set", "-all"] if no_caps else []
    r = subprocess.run([*drop, sys.executable, "-B", "-W", "error", "-c", code],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


class FailureTest(Tmp):
    def previous(self, unnamed: bool) -> bytes:
        (self.ws / "kept.txt").write_text("the previous snapshot")
        snap.snapshot(self.bottle, self.dest, unnamed=unnamed)
        return self.dest.read_bytes()

    def assert_kept(self, before: bytes):
        self.assertEqual(sorted(os.listdir(self.dest.parent)), ["latest.tar"])
        self.assertEqual(self.dest.read_bytes(), before)
        out = self.root / "restored"
        snap.restore_snapshot(self.dest, out)
        self.assertEqual((out / "workspace" / "kept.txt").read_text(), "the previous snapshot")

    def small_disk(self) -> bool:
        """The snapshots dir on a 1 MiB tmpfs (False: this host cannot mount)."""
        saved = self.dest.read_bytes()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                            str(self.dest.parent)], capture_output=True, text=True)
        if r.returncode != 0:
            return False
        self.addCleanup(subprocess.run, ["umount", str(self.dest.parent)], check=True)
        self.dest.write_bytes(saved)
        os.chmod(self.dest, 0o600)
        return True

    def test_a_full_disk(self):
        for unnamed in (True, False):
            with self.subTest(unnamed=unnamed):
                self.setUp()
                before = self.previous(unnamed)
                mounted = self.small_disk()
                (self.ws / "big.bin").write_bytes(os.urandom(3 * MIB))
                if mounted:
                    with self.assertRaises(BackendError) as cm:
                        snap.snapshot(self.bottle, self.dest, unnamed=unnamed)
                    message, why = str(cm.exception), "No space left on device"
                else:   # no mount here: a file-size limit stands in for the full disk
                    code, message = child_snapshot(self.bottle, self.dest, unnamed, fsize=MIB)
                    self.assertEqual(code, 3, message)
                    why = "File too large"
                self.assertIn(f"snapshot failed: {why}; the previous snapshot is kept", message)
                self.assertEqual(len(message.strip().splitlines()), 1)
                self.assert_kept(before)

    def test_an_unreadable_file(self):
        for unnamed in (True, False):
            with self.subTest(unnamed=unnamed):
                self.setUp()
                before = self.previous(unnamed)
                (self.ws / "secret").write_text("mode 000")
                os.chmod(self.ws / "secret", 0)
                code, out = child_snapshot(self.bottle, self.dest, unnamed, no_caps=True)
                self.assertEqual(code, 3, out)
                self.assertEqual(out.strip(), "snapshot failed: Permission denied "
                                 "('workspace/secret'); the previous snapshot is kept")
                self.assert_kept(before)

    def test_the_cap_reached_while_writing(self):
        (self.ws / "a").write_bytes(b"a" * 5000)
        with tarfile.open(fileobj=io.BytesIO(), mode="w") as tar:
            with self.assertRaises(BackendError) as cm:
                snap._write(tar, self.bottle, 4096)   # a file that grew since the check
        self.assertIn("over the cap of 4096 bytes", str(cm.exception))

    def test_over_the_cap_and_a_killed_snapshots_leftover(self):
        before = self.previous(True)
        (self.dest.parent / "latest.tmp").write_bytes(b"left by a killed snapshot")
        (self.ws / "big.bin").write_bytes(b"b" * MIB)
        with self.assertRaises(BackendError):
            snap.snapshot(self.bottle, self.dest, max_bytes=MIB)
        self.assert_kept(before)
        snap.snapshot(self.bottle, self.dest)
        self.assertEqual(sorted(os.listdir(self.dest.parent)), ["latest.tar"])


if __name__ == "__main__":
    unittest.main()
