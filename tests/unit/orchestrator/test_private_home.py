"""The orchestrator's files are private whatever the umask it starts under: the store's DB
and its -wal/-shm are created 0600, and at start (`bootstrap.secure_home`) the home, state/,
checkouts/, gates/ and the queue are made 0700 and wider existing modes on them, on the DB
files and on the bottles' metadata, logs, prompts and snapshots are narrowed with one log
line each."""

from __future__ import annotations

import os
import stat
import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator import bootstrap
from bot_bottle.orchestrator.config import Config
from bot_bottle.orchestrator.store import SqliteRunStore


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class PrivateHomeTest(unittest.TestCase):
    def home(self, umask: int) -> Path:
        old = os.umask(umask)
        self.addCleanup(os.umask, old)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return Path(tmp.name) / "home"

    def config(self, home: Path) -> Config:
        return Config.from_env({"HOME": str(home), "BOT_BOTTLE_HOME": str(home),
                                "FORGE_GITEA_URL": "http://127.0.0.1:9", "FORGE_TOKEN": "t",
                                "FORGE_AGENT_ORG": "agents", "FORGE_WEBHOOK_SECRET": "s"})

    def test_the_store_and_its_wal_files_are_0600_under_any_umask(self):
        for umask in (0o022, 0o000):
            with self.subTest(umask=oct(umask)):
                home = self.home(umask)
                home.mkdir()
                store = SqliteRunStore(home / "orchestrator.db")
                self.addCleanup(store.close)
                for suffix in ("", "-wal", "-shm"):
                    path = home / f"orchestrator.db{suffix}"
                    self.assertTrue(path.exists(), path)
                    self.assertEqual(mode(path), 0o600, path)

    def test_a_fresh_home_is_made_private_under_any_umask(self):
        for umask in (0o022, 0o000):
            with self.subTest(umask=oct(umask)):
                home = self.home(umask)
                config = self.config(home)
                bootstrap.secure_home(config)
                for d in (home, home / "state", home / "checkouts", home / "gates", home / "queue"):
                    self.assertEqual(mode(d), 0o700, d)

    def test_wider_existing_modes_are_narrowed_with_one_log_line_each(self):
        home = self.home(0o000)
        for d in ("state/s1/snapshots", "checkouts", "gates", "queue"):
            (home / d).mkdir(parents=True)
        wide_dirs = [home, home / "state", home / "checkouts", home / "gates", home / "queue",
                     home / "state" / "s1", home / "state" / "s1" / "snapshots"]
        for d in wide_dirs:
            os.chmod(d, 0o755)
        wide_files = [home / n for n in ("orchestrator.db", "orchestrator.db-wal", "orchestrator.db-shm")]
        wide_files += [home / "state" / "s1" / n for n in ("metadata.json", "agent.log",
                                                          "agent.log.1", "prompt.txt",
                                                          "snapshots/latest.tar")]
        for f in wide_files:
            f.write_text("x")
            os.chmod(f, 0o644)
        private = home / "state" / "s1" / "agent.log.2"
        private.write_text("x")
        os.chmod(private, 0o600)
        with self.assertLogs("bot_bottle.orchestrator.bootstrap", "WARNING") as logs:
            bootstrap.secure_home(self.config(home))
        for d in wide_dirs:
            self.assertEqual(mode(d), 0o700, d)
        for f in wide_files:
            self.assertEqual(mode(f), 0o600, f)
        self.assertEqual(len(logs.output), len(wide_dirs) + len(wide_files))
        for path in wide_dirs + wide_files:
            self.assertEqual(sum(f"{path} " in line for line in logs.output), 1, path)
