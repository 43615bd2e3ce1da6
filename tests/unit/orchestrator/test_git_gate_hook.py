"""The git gate's pre-receive hook logic (`git_hook`) on real git repositories, no HTTP: which
ref updates pass, and what the scan of a push's new commits finds, where (file and line in the
new version, or the commit message), and what it must not take for a header or report twice."""

from __future__ import annotations

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator.git_hook import ZERO, Hit, Update, parse_updates, ref_problems, scan_push

BRANCH = "bot-bottle/acme-widgets-1"
KEY = "sk-ant-api03-" + "Zz9_x-Yy" * 6
TOKEN = "the-run-token-Qq1Ww2Ee3Rr4Tt5"
SHA_A, SHA_B = "a" * 40, "b" * 40


class RefRulesTest(unittest.TestCase):
    CASES = [  # (name, updates, refused?)
        ("creating the run's branch", [Update(ZERO, SHA_A, f"refs/heads/{BRANCH}")], False),
        ("updating (or forcing) the run's branch", [Update(SHA_A, SHA_B, f"refs/heads/{BRANCH}")], False),
        ("pushing to main", [Update(SHA_A, SHA_B, "refs/heads/main")], True),
        ("pushing to another run's branch",
         [Update(ZERO, SHA_B, "refs/heads/bot-bottle/acme-widgets-2")], True),
        ("pushing to a branch named like the run's plus a suffix",
         [Update(ZERO, SHA_B, f"refs/heads/{BRANCH}-x")], True),
        ("deleting the run's branch", [Update(SHA_A, ZERO, f"refs/heads/{BRANCH}")], True),
        ("pushing a tag", [Update(ZERO, SHA_A, "refs/tags/v1")], True),
        ("the run's branch together with main",
         [Update(ZERO, SHA_A, f"refs/heads/{BRANCH}"), Update(SHA_A, SHA_B, "refs/heads/main")], True),
        ("nothing at all", [], True),
    ]

    def test_only_the_runs_own_branch_may_be_created_or_updated(self) -> None:
        for name, updates, refused in self.CASES:
            with self.subTest(name):
                self.assertEqual(bool(ref_problems(updates, BRANCH)), refused)

    def test_a_refusal_names_the_ref_and_how_to_push_instead(self) -> None:
        problems = ref_problems([Update(SHA_A, SHA_B, "refs/heads/main")], BRANCH)
        self.assertEqual(problems, [f"refused refs/heads/main: this run may push only "
                                    f"refs/heads/{BRANCH} (git push origin HEAD:{BRANCH})"])
        self.assertIn("does not delete", ref_problems([Update(SHA_A, ZERO, f"refs/heads/{BRANCH}")],
                                                      BRANCH)[0])

    def test_receive_packs_lines_are_parsed(self) -> None:
        self.assertEqual(parse_updates(f"{ZERO} {SHA_A} refs/heads/x\n{SHA_A} {SHA_B} refs/heads/y\n"),
                         [Update(ZERO, SHA_A, "refs/heads/x"), Update(SHA_A, SHA_B, "refs/heads/y")])


class ScanPushTest(unittest.TestCase):
    """A repository whose `main` holds the old work; new commits are made and `main` put back,
    so, as in pre-receive, the new ones are reachable from no ref."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.repo = Path(tmp.name)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp.name,
                    "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x",
                    "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@x"}
        self.git("init", "-q", "-b", "main")
        # old work, already on Gitea: its secret-looking line is not the push's business
        self.base = self.commit({"app.py": "".join(f"line {n}\n" for n in range(1, 11)),
                                 "old.txt": f"{KEY}\n"}, "base")

    def git(self, *args: str, input: bytes | None = None) -> str:
        return subprocess.run(["git", "-C", str(self.repo), *args], env=self.env, check=True,
                              capture_output=True, input=input).stdout.decode().strip()

    def commit(self, files: dict[str, str | bytes], message: str) -> str:
        for name, data in files.items():
            path = self.repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data if isinstance(data, bytes) else data.encode())
        self.git("add", "-A")
        self.git("commit", "-q", "-F", "-", input=message.encode())
        return self.git("rev-parse", "HEAD")

    def scan(self, new: str) -> list[Hit]:
        self.git("update-ref", "refs/heads/main", self.base)
        return scan_push(new, {"the run token": TOKEN}, cwd=str(self.repo))

    def test_an_added_line_is_reported_at_its_line_in_the_new_file(self) -> None:
        lines = [f"line {n}\n" for n in range(1, 11)]
        lines[6:6] = [f"key = '{KEY}'\n"]            # becomes line 7
        new = self.commit({"app.py": "".join(lines)}, "add a key")
        self.assertEqual(self.scan(new), [Hit(new, "app.py", 7, "Anthropic API key")])

    def test_the_message_of_a_commit_is_scanned_by_its_line(self) -> None:
        new = self.commit({"a.txt": "clean\n"}, f"subject\n\nbody with {TOKEN}\n")
        self.assertEqual(self.scan(new), [Hit(new, None, 3, "the run token")])

    def test_every_new_commit_is_scanned_even_when_a_later_one_removes_the_secret(self) -> None:
        first = self.commit({"notes.md": f"a\n{TOKEN}\n"}, "oops")
        last = self.commit({"notes.md": "a\n"}, "remove it again")
        self.assertEqual(self.scan(last), [Hit(first, "notes.md", 2, "the run token")])

    def test_removed_lines_and_lines_already_on_gitea_are_not_findings(self) -> None:
        new = self.commit({"old.txt": "nothing here\n"}, "drop the old key")
        self.assertEqual(self.scan(new), [])

    def test_file_content_that_looks_like_a_diff_header_is_still_content(self) -> None:
        tricky = f"++ b/elsewhere\n{KEY}\ndiff --git a/x b/x\n@@ -1 +1 @@\n-{TOKEN}\n"
        new = self.commit({"tricky.txt": tricky}, "tricky")
        self.assertEqual(self.scan(new), [Hit(new, "tricky.txt", 2, "Anthropic API key"),
                                          Hit(new, "tricky.txt", 5, "the run token")])

    def test_a_message_that_looks_like_a_diff_hides_nothing(self) -> None:
        new = self.commit({"a.txt": "x\n"}, f"s\n\ndiff --git a/a b/a\n+++ b/a\n@@ -1 +1 @@\n{KEY}\n")
        self.assertEqual(self.scan(new), [Hit(new, None, 6, "Anthropic API key")])

    def test_odd_file_names_and_binary_files_are_scanned(self) -> None:
        new = self.commit({"dir/na\tme é.txt": f"{TOKEN}\n", "blob.bin": b"\x00\x01" + KEY.encode() + b"\n"},
                          "odd")
        self.assertEqual(sorted(self.scan(new), key=lambda h: h.file),
                         [Hit(new, "blob.bin", 1, "Anthropic API key"),
                          Hit(new, "dir/na\tme é.txt", 1, "the run token")])

    def test_a_merge_is_scanned_against_its_first_parent(self) -> None:
        self.git("checkout", "-q", "-b", "side")
        side = self.commit({"side.txt": f"{TOKEN}\n"}, "side")
        self.git("checkout", "-q", "main")
        self.commit({"main.txt": "m\n"}, "main work")
        self.git("merge", "-q", "--no-edit", "side")
        merge = self.git("rev-parse", "HEAD")
        self.git("branch", "-D", "side")
        hits = self.scan(merge)
        self.assertIn(Hit(side, "side.txt", 1, "the run token"), hits)
        self.assertIn(Hit(merge, "side.txt", 1, "the run token"), hits)


if __name__ == "__main__":
    unittest.main()
