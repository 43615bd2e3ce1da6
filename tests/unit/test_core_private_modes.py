"""Private by default: whatever the caller's umask (0o022, 0o000) and however wide the files
that were there before (0755 dirs, 0644 files), what bot-bottle writes under $BOT_BOTTLE_HOME
is the owner's alone: directories 0700, metadata, lock, prompt and snapshot files 0600."""

import os
import stat
import tempfile
import unittest
from pathlib import Path

from bot_bottle import private, state
from bot_bottle.agent_run import BottleLock, write_prompt
from bot_bottle.backend.base import snapshot


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class PrivateModesTest(unittest.TestCase):
    def with_umask(self, umask: int) -> Path:
        old = os.umask(umask)
        self.addCleanup(os.umask, old)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return Path(tmp.name) / "home"

    def test_state_written_under_a_permissive_umask_is_private(self):
        for umask in (0o022, 0o000):
            with self.subTest(umask=oct(umask)):
                home = self.with_umask(umask)
                state.write_metadata(home, "s1", {"slug": "s1"})
                BottleLock(home, "s1").release()
                write_prompt(state.state_dir(home, "s1") / "prompt.txt", "hi")
                bottle = state.state_dir(home, "s1") / "bottle"
                (bottle / "workspace").mkdir(parents=True)
                snapshot(bottle, state.state_dir(home, "s1") / "snapshots" / "latest.tar")
                for d in (home, home / "state", home / "state" / "s1", home / "state" / "s1" / "snapshots"):
                    self.assertEqual(mode(d), 0o700, d)
                for f in (home / "state" / "s1" / "metadata.json", home / "state" / ".s1.lock",
                          home / "state" / "s1" / "prompt.txt",
                          home / "state" / "s1" / "snapshots" / "latest.tar"):
                    self.assertEqual(mode(f), 0o600, f)

    def test_wider_existing_home_state_and_files_are_narrowed_on_use(self):
        home = self.with_umask(0o000)
        (home / "state" / "s1" / "snapshots").mkdir(parents=True, mode=0o755)
        for d in (home, home / "state", home / "state" / "s1", home / "state" / "s1" / "snapshots"):
            os.chmod(d, 0o755)
        for name in ("prompt.txt", "metadata.json"):
            (home / "state" / "s1" / name).write_text("{}")
            os.chmod(home / "state" / "s1" / name, 0o644)
        (home / "state" / ".s1.lock").write_text("")
        os.chmod(home / "state" / ".s1.lock", 0o644)
        state.write_metadata(home, "s1", {"slug": "s1"})
        BottleLock(home, "s1").release()
        write_prompt(home / "state" / "s1" / "prompt.txt", "hi")
        (home / "state" / "s1" / "bottle" / "workspace").mkdir(parents=True)
        snapshot(home / "state" / "s1" / "bottle", home / "state" / "s1" / "snapshots" / "latest.tar")
        for d in (home, home / "state", home / "state" / "s1", home / "state" / "s1" / "snapshots"):
            self.assertEqual(mode(d), 0o700, d)
        for name in ("prompt.txt", "metadata.json"):
            self.assertEqual(mode(home / "state" / "s1" / name), 0o600, name)
        self.assertEqual(mode(home / "state" / ".s1.lock"), 0o600)

    def test_tighten_drops_group_other_and_setuid_bits_and_says_so(self):
        home = self.with_umask(0o022)
        home.mkdir()
        f = home / "f"
        f.write_text("x")
        os.chmod(f, 0o4755)
        self.assertTrue(private.tighten(f, 0o600))
        self.assertEqual(mode(f), 0o600)
        self.assertFalse(private.tighten(f, 0o600))
        self.assertFalse(private.tighten(home / "missing", 0o600))
