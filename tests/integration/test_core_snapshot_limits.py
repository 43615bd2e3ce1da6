"""Freeze under pressure: a full disk (a file-size limit on the CLI) fails that `commit` with
one clear line and exit 4, keeps the previous snapshot byte for byte and leaves no temporary
file; a workspace over the snapshot cap (BOT_BOTTLE_MAX_SNAPSHOT_BYTES, default 10 GiB,
apparent sizes: a sparse file counts in full) is refused before anything is written, even a
20 GiB sparse file with no byte used; after either, a commit within the limits succeeds."""

import json
import os
import resource
import subprocess
import sys
import time
import unittest

from ._core_home import REPO_ROOT, cli, make_home

MIB = 1024 * 1024


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

    def test_a_20_gib_sparse_file_is_refused_at_the_default_cap_without_filling_the_disk(self):
        with open(self.ws / "sparse.img", "wb") as fh:
            fh.truncate(20 * 1024 ** 3)
        t0 = time.monotonic()
        r = cli(self.home, "commit", "lim")
        self.assertLess(time.monotonic() - t0, 30)
        self.assert_failed_and_kept(r, ["BOT_BOTTLE_MAX_SNAPSHOT_BYTES", str(10 * 1024 ** 3)])
        os.unlink(self.ws / "sparse.img")
        r = cli(self.home, "commit", "lim")
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
