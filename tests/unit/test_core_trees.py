"""`trees.remove_tree`: an agent's tree of any depth and any modes goes, links are not followed."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

from bot_bottle import state
from bot_bottle.errors import BackendError
from bot_bottle.trees import remove_tree


def deep(root: Path, depth: int) -> Path:
    """A chain of `depth` nested directories, made without recursion or long paths."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as fh:
            fh.write("x")
    finally:
        os.close(fd)
    return root


class RemoveTreeTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)

    def test_a_tree_deeper_than_the_recursion_limit_is_removed(self) -> None:
        (self.root / "ws").mkdir()
        tree = deep(self.root / "ws", 3000)
        with self.assertRaises(RecursionError):  # what the stdlib does with it on 3.11
            shutil.rmtree(tree, ignore_errors=True)
        remove_tree(tree)
        self.assertFalse(tree.exists())

    def test_links_are_removed_not_followed(self) -> None:
        outside = self.root / "outside"
        outside.mkdir()
        (outside / "keep").write_text("mine")
        ws = self.root / "ws"
        ws.mkdir()
        (ws / "link").symlink_to(outside)
        os.link(outside / "keep", ws / "hard")
        remove_tree(ws)
        self.assertFalse(ws.exists())
        self.assertEqual((outside / "keep").read_text(), "mine")

    def test_unreadable_directories_go_too(self) -> None:
        ws = self.root / "ws"
        (ws / "locked" / "inner").mkdir(parents=True)
        (ws / "locked" / "inner" / "f").write_text("x")
        os.chmod(ws / "locked" / "inner", 0)
        os.chmod(ws / "locked", 0)
        remove_tree(ws)
        self.assertFalse(ws.exists())

    @unittest.skipUnless(os.getuid() == 0, "root runs this as the agent user; others are that user")
    def test_a_non_root_owner_removes_what_it_made_unreadable(self) -> None:
        # root reads any mode; the agent user (as the CLI of a non-root service is) does not
        import pwd
        import subprocess
        import sys
        user = pwd.getpwnam("bot-bottle")  # .ci/setup makes it; the suite runs as root
        os.chmod(self.root, 0o711)
        ws = self.root / "mine" / "ws"  # in a directory of the user's, as a state dir is
        (ws / "locked" / "inner").mkdir(parents=True)
        (ws / "locked" / "inner" / "f").write_text("x")
        for path in (ws.parent, ws, ws / "locked", ws / "locked" / "inner",
                     ws / "locked" / "inner" / "f"):
            os.lchown(path, user.pw_uid, user.pw_gid)
        os.chmod(ws / "locked" / "inner", 0)
        os.chmod(ws / "locked", 0)
        repo = str(Path(__file__).resolve().parents[2])
        # the system python: ours may live under /root, which the agent user cannot enter
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        r = subprocess.run([python, "-I", "-c",
                            "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from bot_bottle.trees import remove_tree; remove_tree(sys.argv[2])",
                            repo, str(ws)], user=user.pw_uid, group=user.pw_gid,
                           extra_groups=[], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(ws.exists())

    def test_a_missing_path_is_fine_and_a_failure_is_one_line(self) -> None:
        remove_tree(self.root / "absent")
        # a file of the kernel's: nothing can remove it, and the reason says so
        with self.assertRaises(BackendError) as caught:
            remove_tree(Path("/proc/self/status"), "the proc file")
        self.assertIn("cannot remove the proc file /proc/self/status", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_state_removal_survives_an_agent_s_deep_tree(self) -> None:
        home = self.root / "home"
        d = state.state_dir(home, "deep-1")
        (d / "bottle" / "workspace").mkdir(parents=True)
        deep(d / "bottle" / "workspace", 3000)
        state.remove_state(home, "deep-1")
        self.assertFalse(d.exists())


if __name__ == "__main__":
    unittest.main()
