"""bot_bottle.backend.lookup.locate: finding the agent's program inside a bottle from its mounts,
like execvp would, before the bottle exists (real files and symlinks in a temp dir)."""

import os
import tempfile
import unittest
from pathlib import Path

from bot_bottle.backend import agent_user
from bot_bottle.backend.lookup import locate


def mount(src, dst=None, mode="ro"):
    return {"src": str(src), "dst": str(dst or src), "mode": mode}


class LocateTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.bin = self.root / "tools" / "bin"
        self.share = self.root / "share"
        self.bin.mkdir(parents=True)
        self.share.mkdir()

    def exe(self, path, mode=0o755):
        path.write_text("#!/bin/sh\n")
        os.chmod(path, mode)
        return path

    def test_a_bare_name_is_found_on_the_path_under_a_mount(self):
        self.exe(self.bin / "agent")
        found = locate("agent", f"/usr/local/bin:{self.bin}:/usr/bin", [mount("/usr"), mount(self.bin)], "/workspace")
        self.assertEqual(found.path, str(self.bin / "agent"))
        found = locate("agent", "/usr/local/bin:/usr/bin", [mount("/usr"), mount(self.bin)], "/workspace")
        self.assertEqual((found.path, found.outside, found.unchecked), (None, None, False))

    def test_a_directory_on_the_path_that_is_not_bound_does_not_count(self):
        self.exe(self.bin / "agent")
        found = locate("agent", str(self.bin), [mount("/usr")], "/workspace")
        self.assertIsNone(found.path)

    def test_a_symlink_into_an_unbound_folder_is_reported_with_its_target(self):
        target = self.exe(self.share / "agent-2.1")
        (self.bin / "agent").symlink_to(target)
        found = locate("agent", str(self.bin), [mount(self.bin)], "/workspace")
        self.assertEqual((found.path, found.outside), (None, str(target)))
        found = locate("agent", str(self.bin), [mount(self.bin), mount(self.share)], "/workspace")
        self.assertEqual(found.path, str(self.bin / "agent"))

    def test_system_programs_reached_through_symlinked_dirs_are_found(self):
        mounts = [mount(d) for d in ("/usr", "/bin") if os.path.exists(d)]
        self.assertEqual(locate("sh", "/usr/local/bin:/usr/bin:/bin", mounts, "/workspace").path, "/usr/bin/sh")

    def test_files_that_are_not_executable_and_dangling_links_are_skipped_like_execvp_does(self):
        self.exe(self.bin / "agent", mode=0o644)
        (self.bin / "other").symlink_to(self.root / "missing")
        second = self.root / "second"
        second.mkdir()
        self.exe(second / "agent")
        mounts = [mount(self.bin), mount(second)]
        self.assertEqual(locate("agent", f"{self.bin}:{second}", mounts, "/w").path, str(second / "agent"))
        self.assertIsNone(locate("other", f"{self.bin}", mounts, "/w").path)

    def test_absolute_and_relative_programs_and_mounts_at_other_paths(self):
        self.exe(self.bin / "agent")
        mounts = [mount(self.bin, "/opt/agent/bin")]
        self.assertEqual(locate("/opt/agent/bin/agent", "", mounts, "/w").path, "/opt/agent/bin/agent")
        self.assertIsNone(locate(str(self.bin / "agent"), "", mounts, "/w").path)
        self.assertEqual(locate("bin/agent", "", [mount(self.bin.parent, "/w")], "/w").path, "/w/bin/agent")

    def test_a_program_that_may_be_in_a_mount_not_made_yet_is_unchecked(self):
        mounts = [mount("/usr"), mount(self.root / "not-yet" / "workspace", "/workspace", "rw")]
        found = locate("./run-agent.sh", "/usr/bin", mounts, "/workspace")
        self.assertEqual((found.path, found.unchecked), (None, True))
        found = locate("agent", "/workspace/bin:/usr/bin", mounts, "/workspace")
        self.assertEqual((found.path, found.unchecked), (None, True))


class AgentUserExecuteTest(unittest.TestCase):
    """As root the agent runs as the agent user: a program only root may run is not found, so
    the start refuses it by name instead of the agent exiting 126 in the bottle."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.bin = Path(tmp.name)
        self.user = agent_user.AgentUser("agent", uid=os.getuid() + 4242, gid=os.getgid() + 4242)

    def located(self, mode: int, owner: tuple[int, int] | None = None) -> str | None:
        path = self.bin / "agent"
        path.write_text("#!/bin/sh\n")
        os.chmod(path, mode)
        if owner is not None:
            os.chown(path, *owner)
        return locate("agent", str(self.bin), [mount(self.bin)], "/workspace",
                      lambda p: agent_user.can_execute(p, self.user)).path

    def test_only_what_the_agent_user_may_execute_is_found(self):
        self.assertIsNotNone(self.located(0o755))  # other may execute
        self.assertIsNone(self.located(0o750))  # the caller's group only
        self.assertIsNone(self.located(0o700))  # the caller only (as root: any x bit would do)
        if os.getuid() == 0:  # files of the agent user's own, or of its group
            self.assertIsNotNone(self.located(0o700, (self.user.uid, 0)))
            self.assertIsNone(self.located(0o070, (self.user.uid, 0)))
            self.assertIsNotNone(self.located(0o050, (0, self.user.gid)))

    def test_not_root_it_is_the_caller_s_own_right(self):
        path = self.bin / "agent"
        path.write_text("#!/bin/sh\n")
        os.chmod(path, 0o700)
        self.assertEqual(agent_user.can_execute(str(path), None), os.access(path, os.X_OK))


if __name__ == "__main__":
    unittest.main()
