"""`start --workspace DIR` and what fills a new bottle's workspace, through bot_bottle.api with a
fake `bwrap` (real files, real git, a real cross-filesystem move from /dev/shm)."""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from bot_bottle import api
from bot_bottle.errors import BackendError, UsageError

from .test_core_api import ApiTestBase


class WorkspaceTest(ApiTestBase):
    def setUp(self):
        super().setUp()
        (self.bin / "bwrap").write_text("#!/bin/sh\necho '[]' >> \"$(dirname \"$0\")/log\"\n")  # runs nothing
        self.ws = self.home / "state" / "ag" / "bottle" / "workspace"
        self.checkout = self.home.parent / "checkout"
        self.checkout.mkdir()
        subprocess.run(["git", "init", "-q", str(self.checkout)], check=True)
        (self.checkout / "main.py").write_text("print('hi')\n")

    def bottle(self, name, text):
        (self.home / "bottles" / f"{name}.toml").write_text(text)

    def test_the_directory_is_moved_in_and_bottle_sources_go_beside_it_excluded_from_git(self):
        inode = (self.checkout / "main.py").stat().st_ino
        self.assertEqual(self.start(workspace=str(self.checkout)), 0)
        self.assertFalse(self.checkout.exists())
        self.assertEqual((self.ws / "main.py").stat().st_ino, inode, "renamed, not copied")
        self.assertEqual((self.ws / "b1" / "README").read_text(), "hi\n")
        self.assertEqual((self.ws / ".git" / "info" / "exclude").read_text().splitlines()[-1], "/b1/")
        # as root the workspace is the agent user's: git refuses it as "dubious" unless told
        status = subprocess.run(["git", "-c", f"safe.directory={self.ws}", "-C", str(self.ws), "status",
                                 "--porcelain"], capture_output=True, text=True, check=True).stdout
        self.assertEqual(status, "?? main.py\n")
        self.assertEqual(self.meta("ag")["cwd"], str(self.ws))

    def test_a_directory_on_another_filesystem_is_copied_then_removed(self):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
            self.assertNotEqual(os.stat(shm).st_dev, os.stat(self.home).st_dev,
                                "/dev/shm must be another filesystem for this test")
            src = Path(shm) / "checkout"
            (src / "sub").mkdir(parents=True)
            (src / "sub" / "f.txt").write_text("data\n")
            (src / "link").symlink_to("sub/f.txt")
            self.bottle("b1", 'network = "none"\n')
            self.assertEqual(self.start(workspace=str(src)), 0)
            self.assertFalse(src.exists())
        self.assertEqual((self.ws / "sub" / "f.txt").read_text(), "data\n")
        self.assertEqual(os.readlink(self.ws / "link"), "sub/f.txt")

    def test_several_sources_with_a_workspace_each_get_their_folder(self):
        other = self.home.parent / "other"
        other.mkdir()
        (other / "x").write_text("x\n")
        self.bottle("b2", f'dir = "{other}"\n')
        self.bottle("b3", 'network = "none"\n')
        self.assertEqual(self.start(workspace=str(self.checkout), bottles=["b1", "b2", "b3"]), 0)
        self.assertEqual(sorted(p.name for p in self.ws.iterdir()), [".git", "b1", "b2", "main.py"])
        self.assertEqual((self.ws / ".git" / "info" / "exclude").read_text().splitlines()[-2:], ["/b1/", "/b2/"])
        self.assertFalse((self.ws.parent / ".sources").exists())

    def test_without_a_workspace_sources_fill_it_as_before_and_none_leaves_it_empty(self):
        self.bottle("b3", 'network = "none"\n')
        self.assertEqual(self.start(bottles=["b3"]), 0)
        self.assertEqual(list(self.ws.iterdir()), [])
        api.destroy(self.home, "ag", environ=self.environ)
        self.assertEqual(self.start(bottles=["b1", "b3"]), 0)
        self.assertEqual((self.ws / "README").read_text(), "hi\n")

    def test_a_bad_workspace_is_a_usage_error_and_touches_nothing(self):
        (self.home.parent / "file").write_text("")
        (self.home.parent / "link").symlink_to(self.checkout)
        (self.checkout / "b1").mkdir()
        (self.home / "checkouts" / "a" / "b").mkdir(parents=True)
        cases = [(self.home.parent / "missing", "no such directory"), (self.home.parent / "file", "not a directory"),
                 (self.home.parent / "link", "is a symlink"), (self.home.parent, "outside $BOT_BOTTLE_HOME"),
                 (self.home / "agents", "outside $BOT_BOTTLE_HOME"), ("/", "outside $BOT_BOTTLE_HOME"),
                 (self.home / "checkouts", "outside $BOT_BOTTLE_HOME"),
                 (self.home / "checkouts" / "a" / "b", "outside $BOT_BOTTLE_HOME"),
                 (self.checkout, "already has an entry 'b1'")]
        for path, text in cases:
            with self.subTest(path=path), self.assertRaises(UsageError) as cm:
                self.start(workspace=str(path))
            self.assertIn(text, str(cm.exception))
            self.assertEqual(cm.exception.exit_code, 2)
        self.assertFalse((self.home / "state" / "ag").exists())
        self.assertTrue((self.checkout / "main.py").exists())
        self.assertEqual(self.calls(), [])

    def test_a_checkout_prepared_in_the_homes_checkouts_folder_is_moved_in(self):
        prepared = self.home / "checkouts" / "acme-widgets-1"
        prepared.parent.mkdir()
        os.rename(self.checkout, prepared)
        self.assertEqual(self.start(workspace=str(prepared)), 0)
        self.assertEqual((self.ws / "main.py").read_text(), "print('hi')\n")
        self.assertFalse(prepared.exists())

    def test_a_failed_clone_leaves_the_directory_where_it_was(self):
        self.bottle("b1", f'repo = "{self.home / "no-such-repo"}"\n')
        with self.assertRaises(BackendError):
            self.start(workspace=str(self.checkout))
        self.assertEqual((self.checkout / "main.py").read_text(), "print('hi')\n")
        self.assertFalse((self.home / "state" / "ag").exists())


if __name__ == "__main__":
    unittest.main()
