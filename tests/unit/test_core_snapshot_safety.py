"""No setuid/setgid file survives into a snapshot or a restored bottle, and restore writes
nothing outside the bottle: `snapshot` strips setuid/setgid (and sticky on files) and leaves
out devices and fifos; `restore_snapshot` refuses absolute names, `..`, names through a
symlink, hard links to outside the archive, devices and fifos, and strips the high mode bits,
with Python's tar filter (3.11.4+) and with our own filter on older Pythons alike."""

import io
import os
import stat
import tarfile
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend import snapshot as snap
from bot_bottle.errors import BackendError
from bot_bottle.trees import remove_tree


def member(name: str, kind=tarfile.REGTYPE, data: bytes = b"x", mode: int = 0o644, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


class SnapshotStripsTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.ws = self.root / "bottle" / "workspace"
        self.ws.mkdir(parents=True)

    def test_snapshot_strips_setuid_setgid_and_sticky_and_leaves_out_devices_and_fifos(self):
        for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("sticky", 0o1644), ("plain", 0o755)):
            (self.ws / name).write_text(name)
            os.chmod(self.ws / name, mode)
        (self.ws / "sgid-dir").mkdir()
        os.chmod(self.ws / "sgid-dir", 0o2775)
        os.mkfifo(self.ws / "fifo")
        os.mknod(self.ws / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))   # as root
        dest = self.root / "snapshots" / "latest.tar"
        snap.snapshot(self.root / "bottle", dest)
        with tarfile.open(dest) as tar:
            modes = {m.name: m.mode for m in tar.getmembers()}
        self.assertNotIn("workspace/fifo", modes)
        self.assertNotIn("workspace/null", modes)
        self.assertEqual(modes["workspace/suid"], 0o755)
        self.assertEqual(modes["workspace/sgid"], 0o755)
        self.assertEqual(modes["workspace/sticky"], 0o644)
        self.assertEqual(modes["workspace/plain"], 0o755)
        self.assertEqual(modes["workspace/sgid-dir"], 0o775)


class RestoreRefusesTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.bottle = self.root / "bottle"
        self.outside = self.root / "outside"
        self.outside.mkdir()

    def tar(self, *members) -> Path:
        path = self.root / "latest.tar"
        with tarfile.open(path, "w") as tar:
            for info, data in members:
                tar.addfile(info, data)
        return path

    def restore_both_ways(self, src: Path):
        """Restore with the builtin filter (when this Python has it) and with ours."""
        ways = [False] + ([True] if hasattr(tarfile, "tar_filter") else [])
        for builtin in ways:
            with self.subTest(builtin_filter=builtin):
                yield lambda: snap.restore_snapshot(src, self.bottle, builtin_filter=builtin)

    def test_a_restored_setuid_or_setgid_file_loses_the_bits(self):
        src = self.tar(member("workspace", tarfile.DIRTYPE, mode=0o755),
                       member("workspace/suid", mode=0o4755), member("workspace/sgid", mode=0o2711))
        for restore in self.restore_both_ways(src):
            restore()
            self.assertEqual(stat.S_IMODE(os.stat(self.bottle / "workspace" / "suid").st_mode), 0o755)
            self.assertEqual(stat.S_IMODE(os.stat(self.bottle / "workspace" / "sgid").st_mode), 0o711)

    def test_restore_refuses_members_that_would_land_outside_or_be_special(self):
        bad = {
            "absolute name": [member(str(self.outside / "abs"))],
            "dot-dot": [member("workspace/../../outside/dd")],
            "through a symlink": [member("workspace", tarfile.DIRTYPE, mode=0o755),
                                  member("workspace/out", tarfile.SYMTYPE, link=str(self.outside)),
                                  member("workspace/out/through")],
            "hard link outside": [member("workspace", tarfile.DIRTYPE, mode=0o755),
                                  member("workspace/hl", tarfile.LNKTYPE, link=str(self.outside / "t"))],
            "hard link via symlink": [member("workspace", tarfile.DIRTYPE, mode=0o755),
                                      member("workspace/s", tarfile.SYMTYPE, link=str(self.outside / "t")),
                                      member("workspace/hl", tarfile.LNKTYPE, link="workspace/s")],
            "device": [member("workspace/null", tarfile.CHRTYPE)],
            "fifo": [member("workspace/fifo", tarfile.FIFOTYPE)],
        }
        (self.outside / "t").write_text("host file")
        for what, members in bad.items():
            src = self.tar(*members)
            for restore in self.restore_both_ways(src):
                with self.subTest(what=what), self.assertRaises(BackendError) as cm:
                    restore()
                self.assertIn("refused", str(cm.exception))
                self.assertEqual(sorted(p.name for p in self.outside.iterdir()), ["t"], what)
                self.assertEqual((self.outside / "t").read_text(), "host file")
                self.assertEqual(os.stat(self.outside / "t").st_nlink, 1)

    def test_a_directory_checked_once_cannot_become_a_symlink_later_in_the_archive(self):
        # restore remembers directories it found real; a later member of the same name must
        # not turn one into a way out
        src = self.tar(member("workspace", tarfile.DIRTYPE, mode=0o755),
                       member("workspace/d", tarfile.DIRTYPE, mode=0o755),
                       member("workspace/d/first"),
                       member("workspace/d", tarfile.SYMTYPE, link=str(self.outside)),
                       member("workspace/d/second"))
        for restore in self.restore_both_ways(src):
            with self.subTest():
                try:
                    restore()
                except (BackendError, OSError, tarfile.TarError):
                    pass   # refusing is fine; writing outside is not
                self.assertEqual(sorted(p.name for p in self.outside.iterdir()), [])
                self.assertFalse((self.bottle / "workspace" / "d").is_symlink())

    def test_a_tree_a_thousand_directories_deep_comes_back_whole(self):
        depth = 1000
        names = ["workspace"] + ["workspace/" + "/".join(["d"] * n) for n in range(1, depth + 1)]
        src = self.tar(*[member(n, tarfile.DIRTYPE, mode=0o755) for n in names],
                       member(names[-1] + "/leaf", data=b"deep"))
        # (runs before the temporary directory's own cleanup, whose rmtree recurses too deep)
        self.addCleanup(remove_tree, self.bottle / "workspace", "the deep test tree")
        for restore in self.restore_both_ways(src):
            restore()
            self.assertEqual((self.bottle / names[-1] / "leaf").read_bytes(), b"deep")

    def test_symlinks_inside_the_bottle_pointing_anywhere_are_kept_as_links(self):
        src = self.tar(member("workspace", tarfile.DIRTYPE, mode=0o755),
                       member("workspace/venv-python", tarfile.SYMTYPE, link="/usr/bin/python3"),
                       member("workspace/rel", tarfile.SYMTYPE, link="venv-python"))
        for restore in self.restore_both_ways(src):
            restore()
            self.assertEqual(os.readlink(self.bottle / "workspace" / "venv-python"), "/usr/bin/python3")
