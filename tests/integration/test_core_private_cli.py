"""The CLI keeps a bottle private whatever umask it is started with: a real `start` and
`commit` under umask 0o000 leave the home and its directories 0700 and the metadata, log,
prompt, lock and snapshot 0600, and no file in the bottle's state readable by others."""

import os
import stat
import unittest

from ._core_home import cli, make_home


class PrivateCliTest(unittest.TestCase):
    def test_start_and_commit_under_umask_000_leave_nothing_readable_by_others(self):
        home = make_home(self)
        old = os.umask(0o000)   # inherited by the CLI we start
        self.addCleanup(os.umask, old)
        r = cli(home, "start", "scripted", "--headless", "--prompt", "hello", "--label", "priv")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = cli(home, "commit", "priv")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(home).st_mode), 0o700)
        d = home / "state" / "priv"
        for name in ("metadata.json", "agent.log", "prompt.txt", "snapshots/latest.tar"):
            self.assertEqual(stat.S_IMODE(os.stat(d / name).st_mode), 0o600, name)
        # a local clone hard-links the source repository's objects (the user's own files, as
        # they are); everything the CLI wrote itself is private
        wide = [str(p) for p in [home / "state", *d.rglob("*")]
                if not p.is_symlink() and os.lstat(p).st_mode & 0o077 and os.lstat(p).st_nlink == 1
                or p.is_dir() and os.lstat(p).st_mode & 0o077]
        self.assertEqual(wide, [])
