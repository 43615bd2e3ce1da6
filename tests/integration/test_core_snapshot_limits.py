"""Freeze under pressure: a full disk fails that `commit` with one clear line and exit 4,
keeps the previous snapshot byte for byte (and restorable) and leaves no temporary file — a
real one (a small tmpfs mounted over snapshots/) and a file-size limit on the CLI alike; a
workspace whose data is over the snapshot cap (BOT_BOTTLE_MAX_SNAPSHOT_BYTES, default 10 GiB)
is refused before anything is written; a 20 GiB sparse file with little data is neither
refused nor written out in full: it commits quickly into a small tar and a resume brings it
back with its size and its holes. After any failure, a commit within the limits succeeds."""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.backend.snapshot import restore_snapshot

from ._core_home import REPO_ROOT, cli, make_home

MIB = 1024 * 1024
GIB = 1024 * MIB


def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (MIB, MIB))


class SnapshotLimitsTest(unittest.TestCase):
    def setUp(self):
        self.home = make_home(self)
        r = cli(self.home, "start", "scripted", "--headless", "--prompt", "p", "--label", "lim")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(cli, self.home, "destroy", "lim")
        r = cli(self.home, "commit", "lim")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.snapshots = self.home / "state" / "lim" / "snapshots"
        self.before = (self.snapshots / "latest.tar").read_bytes()
        self.ws = self.home / "state" / "lim" / "bottle" / "workspace"
        self.files = self.listing(self.ws)

    @staticmethod
    def listing(root: Path) -> dict:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and not p.is_symlink()}

    def assert_restorable_as_before(self):
        """The kept snapshot restores (into a scratch dir) to the workspace it was taken of."""
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        restore_snapshot(self.snapshots / "latest.tar", Path(tmp.name))
        self.assertEqual(self.listing(Path(tmp.name) / "workspace"), self.files)
        self.assertTrue(self.files)

    def mount_small_disk(self) -> bool:
        """snapshots/ on an 8 MiB tmpfs holding the current latest.tar; False if this host
        cannot mount (then the CLI runs under a file-size limit instead)."""
        saved = self.snapshots.parent / "saved.tar"
        os.replace(self.snapshots / "latest.tar", saved)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs",
                            str(self.snapshots)], capture_output=True, text=True)
        if r.returncode == 0:
            self.addCleanup(subprocess.run, ["umount", str(self.snapshots)], check=True)
        fd = os.open(self.snapshots / "latest.tar", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as fh:
            fh.write(saved.read_bytes())
        saved.unlink()
        return r.returncode == 0

    def assert_failed_and_kept(self, r, words):
        self.assertEqual(r.returncode, 4, r.stderr)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("bot-bottle: error: "), lines[0])
        for word in words:
            self.assertIn(word, lines[0])
        self.assertEqual(sorted(p.name for p in self.snapshots.iterdir()), ["latest.tar"])
        self.assertEqual((self.snapshots / "latest.tar").read_bytes(), self.before)
        row = [r for r in json.loads(cli(self.home, "list", "--json").stdout) if r["slug"] == "lim"][0]
        self.assertNotEqual(row["state"], "frozen")

    def test_a_full_disk_during_freeze_fails_it_and_keeps_the_previous_snapshot(self):
        (self.ws / "big.bin").write_bytes(os.urandom(2 * MIB))
        r = self.run_cli_limited("commit", "lim")
        self.assert_failed_and_kept(r, ["snapshot", "previous snapshot is kept"])
        r = cli(self.home, "commit", "lim")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotEqual((self.snapshots / "latest.tar").read_bytes(), self.before)

    def test_a_workspace_over_the_cap_is_refused_before_writing(self):
        (self.ws / "big.bin").write_bytes(b"x" * (2 * MIB))
        r = cli(self.home, "commit", "lim", extra_env={"BOT_BOTTLE_MAX_SNAPSHOT_BYTES": str(MIB)})
        self.assert_failed_and_kept(r, ["BOT_BOTTLE_MAX_SNAPSHOT_BYTES", str(MIB)])

    def test_a_really_full_disk_during_freeze_fails_it_and_keeps_the_previous_snapshot(self):
        mounted = self.mount_small_disk()
        (self.ws / "big.bin").write_bytes(os.urandom(16 * MIB))   # twice the disk
        r = cli(self.home, "commit", "lim") if mounted else self.run_cli_limited("commit", "lim")
        self.assert_failed_and_kept(r, ["snapshot failed", "previous snapshot is kept",
                                        "No space left on device" if mounted else "too large"])
        self.assert_restorable_as_before()
        os.unlink(self.ws / "big.bin")
        r = cli(self.home, "commit", "lim")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(p.name for p in self.snapshots.iterdir()), ["latest.tar"])

    def test_a_20_gib_sparse_file_commits_small_and_resumes_sparse(self):
        with open(self.ws / "sparse.img", "wb") as fh:
            fh.truncate(20 * GIB)
            fh.seek(GIB)
            fh.write(b"data in the middle")
        t0 = time.monotonic()
        r = cli(self.home, "commit", "lim")
        self.assertLess(time.monotonic() - t0, 30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(p.name for p in self.snapshots.iterdir()), ["latest.tar"])
        self.assertLess((self.snapshots / "latest.tar").stat().st_size, MIB)
        os.unlink(self.ws / "sparse.img")   # resume must bring it back from the tar
        r = cli(self.home, "resume", "lim", "--headless", "--prompt", "again")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = os.stat(self.ws / "sparse.img")
        self.assertEqual(st.st_size, 20 * GIB)
        self.assertLess(st.st_blocks * 512, MIB)   # still sparse
        with open(self.ws / "sparse.img", "rb") as fh:
            fh.seek(GIB - 2)
            self.assertEqual(fh.read(20), b"\0\0data in the middle")

    def test_sparse_data_over_the_cap_is_refused_by_its_data_not_its_size(self):
        with open(self.ws / "sparse.img", "wb") as fh:
            fh.truncate(20 * GIB)
            fh.write(os.urandom(2 * MIB))
        r = cli(self.home, "commit", "lim", extra_env={"BOT_BOTTLE_MAX_SNAPSHOT_BYTES": str(MIB)})
        self.assert_failed_and_kept(r, ["BOT_BOTTLE_MAX_SNAPSHOT_BYTES", str(MIB)])
        r = cli(self.home, "commit", "lim",
                extra_env={"BOT_BOTTLE_MAX_SNAPSHOT_BYTES": str(4 * MIB)})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_a_bad_cap_setting_is_a_usage_error(self):
        r = cli(self.home, "commit", "lim", extra_env={"BOT_BOTTLE_MAX_SNAPSHOT_BYTES": "lots"})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("BOT_BOTTLE_MAX_SNAPSHOT_BYTES", r.stderr)

    def run_cli_limited(self, *args):
        """The CLI with a 1 MiB file-size limit: a full disk for what it writes."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BOT_BOTTLE_HOME": str(self.home),
               "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.run([sys.executable, "-W", "error", "-m", "bot_bottle", *args], env=env,
                              capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT),
                              preexec_fn=limit_file_size)
