"""The issue's repository as the workspace: `Workspaces` clones what the fake Gitea serves
(real git over smart HTTP) on the host, the token passed only through git's environment; the
executor does it on the worker before `start`, and a failed clone fails the run with git's
reason on the issue."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import outbox
from bot_bottle.orchestrator.executor import Executor
from bot_bottle.orchestrator.prompts import launch_prompt
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.workspace import WorkspaceError, Workspaces
from tests.support.fake_forge import FakeForge
from bot_bottle.demo_support.fake_gitea import FakeGitea

from ._fakes import FakeBottleRunner, FakeClock, temp_store

TOKEN = "orchestrator-token-5f0c2e9a"
LABEL = "acme-widgets-7"


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path))
    return found


class WorkspacesTest(unittest.TestCase):
    def setUp(self) -> None:
        self.g = FakeGitea().start()
        self.addCleanup(self.g.stop)
        self.g.add_token(TOKEN, "orchestrator")
        self.g.add_repo("acme", "widgets", default_branch="trunk", files={"README.md": "hi\n"})
        self.sha = self.g.add_commit("acme", "widgets", {"app.py": "print('hi')\n"}, "app")
        self.g.add_commit("acme", "widgets", {"other.txt": "x"}, "elsewhere", branch="feature")
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
                    "GIT_CONFIG_NOSYSTEM": "1"}

    def workspaces(self, *, url: str | None = None, token: str = TOKEN, timeout: float = 60,
                   env: dict | None = None) -> Workspaces:
        return Workspaces(url or self.g.url, token, self.home, env=env or self.env, timeout=timeout)

    def git(self, checkout: str, *args: str, check: bool = True) -> str:
        return subprocess.run(["git", "-C", checkout, *args], capture_output=True, text=True,
                              check=check, env=self.env).stdout.strip()

    def test_the_clone_is_the_default_branch_on_a_new_bot_bottle_branch_in_a_private_dir(self) -> None:
        path = self.workspaces().prepare("acme", "widgets", LABEL)
        self.assertEqual(path, str(self.home / "checkouts" / LABEL))
        self.assertEqual(self.git(path, "rev-parse", "--abbrev-ref", "HEAD"), f"bot-bottle/{LABEL}")
        self.assertEqual(self.git(path, "rev-parse", "HEAD"), self.sha)  # trunk, not feature
        self.assertEqual((Path(path) / "app.py").read_text(), "print('hi')\n")
        for private in (self.home / "checkouts", Path(path)):
            self.assertEqual(stat.S_IMODE(private.stat().st_mode), 0o700, private)

    def test_the_token_is_in_no_file_of_the_checkout_and_its_remote_is_the_git_gate(self) -> None:
        path = self.workspaces().prepare("acme", "widgets", LABEL)
        self.assertEqual(files_containing(Path(path), TOKEN.encode()), [])
        self.assertEqual(files_containing(self.home, TOKEN.encode()), [])
        remotes = self.git(path, "remote", "-v")
        gate = "http://127.0.0.1:3128/_git/acme/widgets.git"
        self.assertEqual(remotes.split(), ["origin", gate, "(fetch)", "origin", gate, "(push)"])
        # the run's branch tracks nothing: the agent names what it pushes
        self.assertEqual(self.git(path, "config", "--get-regexp", "^branch\\.bot-bottle/",
                                  check=False), "")
        self.assertNotIn("@", remotes)
        self.assertNotIn("extraheader", self.git(path, "config", "--list", "--local").lower())
        # and Gitea saw the orchestrator's token on every git request
        self.assertEqual({r["user"] for r in self.g.git_requests}, {"orchestrator"})

    def test_the_token_never_reaches_git_s_argv(self) -> None:
        bin_dir = self.home.parent / "bin"
        bin_dir.mkdir()
        record = self.home.parent / "argv.txt"
        real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        wrapper = bin_dir / "git"
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{record}"\nexec "{real_git}" "$@"\n')
        wrapper.chmod(0o755)
        env = {**self.env, "PATH": f"{bin_dir}:{self.env['PATH']}"}
        self.workspaces(env=env).prepare("acme", "widgets", LABEL)
        argv = record.read_text()
        self.assertIn("clone", argv)
        self.assertNotIn(TOKEN, argv)

    def test_a_stale_checkout_from_a_crash_is_replaced(self) -> None:
        stale = self.home / "checkouts" / LABEL
        stale.mkdir(parents=True)
        (stale / "half-cloned").write_text("junk")
        path = self.workspaces().prepare("acme", "widgets", LABEL)
        self.assertFalse((Path(path) / "half-cloned").exists())
        self.assertTrue((Path(path) / "README.md").is_file())

    def test_an_empty_repository_still_gives_a_checkout_on_the_branch(self) -> None:
        self.g.add_repo("acme", "empty")
        path = self.workspaces().prepare("acme", "empty", "acme-empty-1")
        self.assertEqual(self.git(path, "symbolic-ref", "HEAD"), "refs/heads/bot-bottle/acme-empty-1")

    def test_a_failed_clone_says_why_in_one_line_and_leaves_nothing(self) -> None:
        with self.assertRaisesRegex(WorkspaceError, r"could not clone acme/nope: fatal: "
                                                    r"repository '.*/acme/nope.git/' not found"):
            self.workspaces().prepare("acme", "nope", "acme-nope-1")
        with self.assertRaisesRegex(WorkspaceError, "could not clone acme/widgets: fatal: could "
                                                    "not read Username"):
            self.workspaces(token="wrong-token").prepare("acme", "widgets", LABEL)
        self.assertEqual(list((self.home / "checkouts").iterdir()), [])

    def test_a_token_git_prints_is_redacted_from_the_reason(self) -> None:
        bin_dir = self.home.parent / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "git"  # prints the header it was given, as a misbehaving proxy might
        fake.write_text('#!/bin/sh\necho "fatal: refused $GIT_CONFIG_VALUE_0" >&2\nexit 128\n')
        fake.chmod(0o755)
        env = {**self.env, "PATH": f"{bin_dir}:{self.env['PATH']}"}
        with self.assertRaises(WorkspaceError) as caught:
            self.workspaces(env=env).prepare("acme", "widgets", LABEL)
        self.assertEqual(str(caught.exception),
                         "could not clone acme/widgets: fatal: refused Authorization: token ***")

    def test_owner_and_repo_names_are_checked_before_any_url_or_path(self) -> None:
        for owner, repo in (("acme", "../etc"), ("..", "x"), ("acme", "a/b"), ("-x", "y"),
                            ("acme", ""), ("acme", "w?x=1"), ("acme", "w idgets")):
            with self.subTest(owner=owner, repo=repo), self.assertRaises(WorkspaceError):
                self.workspaces().prepare(owner, repo, LABEL)
        self.assertFalse((self.home / "checkouts").exists())
        self.assertEqual(self.g.git_requests, [])

    def test_a_clone_that_hangs_is_stopped_at_the_time_limit(self) -> None:
        silent = socket.socket()  # accepts connections (the kernel does) and never answers
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with self.assertRaisesRegex(WorkspaceError, "could not clone acme/widgets: git took "
                                                    "longer than 1 s"):
            self.workspaces(url=url, timeout=1).prepare("acme", "widgets", LABEL)
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual(list((self.home / "checkouts").iterdir()), [])

    def test_discard_only_removes_checkouts(self) -> None:
        self.home.mkdir()
        (self.home / "keep").write_text("x")
        with self.assertRaises(WorkspaceError):
            self.workspaces().discard(self.home)
        self.assertTrue((self.home / "keep").exists())
        path = self.workspaces().prepare("acme", "widgets", LABEL)
        self.workspaces().discard(path)
        self.assertFalse(Path(path).exists())


class ExecutorWorkspaceTest(unittest.TestCase):
    """The executor clones on the launch's worker and hands the checkout to `start`."""

    def setUp(self) -> None:
        self.g = FakeGitea().start()
        self.addCleanup(self.g.stop)
        self.g.add_token(TOKEN, "orchestrator")
        self.g.add_repo("acme", "widgets", files={"README.md": "hi\n"})
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        self.store = temp_store(self)
        self.runner = FakeBottleRunner()
        self.clock = FakeClock()
        self.forge = FakeForge("acme", "widgets")
        self.issue = self.forge.add_issue("Fix it", "details", user="alice")
        self.seen: list[list[str]] = []
        runner_start = self.runner.start

        def start(**kw):  # what the CLI would find at --workspace while it runs
            self.seen.append(sorted(os.listdir(kw["workspace"])) if kw.get("workspace") else [])
            return runner_start(**kw)
        self.runner.start = start
        self.ex = Executor(self.store, self.runner, sidecar_socket="/s.sock", marker="<!-- m -->",
                           clock=self.clock.now, spawn=lambda fn: fn(),
                           workspaces=Workspaces(self.g.url, TOKEN, self.home, env=env),
                           secret_values=(TOKEN,))

    def launch(self, owner: str = "acme", repo: str = "widgets"):
        action = L.decide(None, L.LaunchRequested("claude", ("py",), True))[0]
        return self.ex.create(owner, repo, self.issue, action, launch_prompt("Fix it", "details"))

    def test_start_gets_a_checkout_of_the_issue_s_repository(self) -> None:
        run = self.launch()
        self.assertEqual(self.runner.workspaces, [str(self.home / "checkouts" / run.label)])
        self.assertEqual(self.seen, [[".git", "README.md"]])
        self.assertFalse(Path(self.runner.workspaces[0]).exists(), "what the CLI left is removed")

    def test_a_clone_failure_fails_the_run_with_git_s_reason_on_the_issue(self) -> None:
        run = self.launch(repo="gone")
        final = self.store.get_run(run.id)
        self.assertEqual(final.state, RunState.FAILED)
        self.assertEqual(self.runner.calls, [], "no bottle was started")
        self.assertEqual(outbox.drain(self.store, lambda o, r: self.forge, self.clock.now()), 1)
        [comment] = [c.body for c in self.forge.read_comments(self.issue)]
        self.assertIn("Could not run the agent: could not clone acme/gone: fatal: repository", comment)
        self.assertIn("not found", comment)
        self.assertNotIn(TOKEN, comment)

    def test_a_run_whose_clone_failed_is_cloned_and_started_again_after_a_trusted_comment(
            self) -> None:
        run = self.launch(repo="late")  # not served yet: as if Gitea were briefly down
        self.assertEqual(self.store.get_run(run.id).state, RunState.FAILED)
        outbox.drain(self.store, lambda o, r: self.forge, self.clock.now())
        [said] = [c.body for c in self.forge.read_comments(self.issue)]
        self.assertIn("Comment to retry.", said)
        self.g.add_repo("acme", "late", files={"README.md": "back\n"})
        self.ex.event(run.id, L.TrustedComment("Gitea is back."))
        self.assertEqual(self.store.get_run(run.id).state, RunState.QUEUED)
        self.ex.event(run.id, L.SlotAvailable())
        self.assertEqual(self.runner.workspaces, [str(self.home / "checkouts" / run.label)])
        self.assertEqual(self.seen, [[".git", "README.md"]])
        prompt = self.runner.calls[0][4]
        self.assertTrue(prompt.startswith(launch_prompt("Fix it", "details")), prompt)
        self.assertTrue(prompt.endswith("\n\nGitea is back."), prompt)
        final = self.store.get_run(run.id)  # the fake agent exits 0 without a done signal
        self.assertEqual((final.state, final.slug), (RunState.FROZEN, run.label))


if __name__ == "__main__":
    unittest.main()
