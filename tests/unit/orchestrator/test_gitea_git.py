"""The fake Gitea serves each repo as a real git repository over smart HTTP (`git
http-backend`), with Gitea's rules for a private repository: 401 without a valid token, 403
for a token without a repository scope, 404 for an unknown repository. Real `git` clients."""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import tempfile
import unittest
from pathlib import Path
from urllib.parse import urlsplit

from bot_bottle.demo_support.fake_gitea import FakeGitea


def git_env(home: str, header: str | None, url: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_COUNT": "0"}
    if header is not None:
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"http.{url}/.extraheader",
                   GIT_CONFIG_VALUE_0=header)
    return env


class FakeGiteaGitTest(unittest.TestCase):
    def setUp(self) -> None:
        self.g = FakeGitea().start()
        self.addCleanup(self.g.stop)
        self.g.add_token("tok", "orchestrator")
        self.g.add_token("issues-only", "orchestrator", scopes=("write:issue",))
        self.g.add_token("reader", "orchestrator", scopes=("read:repository",))
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def git(self, *args: str, header: str | None = "Authorization: token tok",
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], env=git_env(str(self.dir), header, self.g.url),
                              cwd=cwd, capture_output=True, text=True, timeout=60)

    def get(self, path: str, auth: str | None) -> http.client.HTTPResponse:
        parts = urlsplit(self.g.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", path, headers={"Authorization": auth} if auth else {})
        return conn.getresponse()

    def test_a_seeded_repo_clones_at_its_default_branch_with_its_files(self) -> None:
        self.g.add_repo("acme", "widgets", default_branch="trunk", files={"README.md": "hi\n"})
        sha = self.g.add_commit("acme", "widgets", {"src/app.py": "print(1)\n"}, "second")
        done = self.git("clone", "-q", self.g.git_url("acme", "widgets"), str(self.dir / "c"))
        self.assertEqual(done.returncode, 0, done.stderr)
        checkout = self.dir / "c"
        self.assertEqual((checkout / "README.md").read_text(), "hi\n")
        self.assertEqual((checkout / "src" / "app.py").read_text(), "print(1)\n")
        branch = self.git("rev-parse", "--abbrev-ref", "HEAD", cwd=checkout).stdout.strip()
        head = self.git("rev-parse", "HEAD", cwd=checkout).stdout.strip()
        self.assertEqual((branch, head), ("trunk", sha))
        self.assertEqual(self.g.git_requests[0]["user"], "orchestrator")

    def test_an_unseeded_repo_clones_empty(self) -> None:
        self.g.add_repo("acme", "empty")
        done = self.git("clone", "-q", self.g.git_url("acme", "empty"), str(self.dir / "e"))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("empty repository", done.stderr)

    def test_without_a_valid_token_the_answer_is_401_with_gitea_s_basic_challenge(self) -> None:
        self.g.add_repo("acme", "widgets", files={"a": "1"})
        for auth in (None, "token wrong", "Basic " + base64.b64encode(b"x:wrong").decode()):
            with self.subTest(auth=auth):
                resp = self.get("/acme/widgets.git/info/refs?service=git-upload-pack", auth)
                resp.read()
                self.assertEqual(resp.status, 401)
                self.assertEqual(resp.getheader("WWW-Authenticate"), 'Basic realm="Gitea"')
        done = self.git("clone", "-q", self.g.git_url("acme", "widgets"), str(self.dir / "n"),
                        header=None)
        self.assertNotEqual(done.returncode, 0)
        self.assertFalse((self.dir / "n" / "a").exists())

    def test_a_token_is_accepted_as_either_half_of_basic_credentials(self) -> None:
        self.g.add_repo("acme", "widgets", files={"a": "1"})
        for pair in (b"orchestrator:tok", b"tok:x-oauth-basic"):
            with self.subTest(pair=pair):
                resp = self.get("/acme/widgets/info/refs?service=git-upload-pack",
                                "Basic " + base64.b64encode(pair).decode())
                body = resp.read()
                self.assertEqual(resp.status, 200)
                self.assertEqual(resp.getheader("Content-Type"),
                                 "application/x-git-upload-pack-advertisement")
                self.assertIn(b"# service=git-upload-pack", body)

    def test_scopes_unknown_repositories_and_push_follow_gitea(self) -> None:
        self.g.add_repo("acme", "widgets", files={"a": "1"})
        resp = self.get("/acme/widgets.git/info/refs?service=git-upload-pack", "token issues-only")
        self.assertEqual((resp.status, b"required scope" in resp.read()), (403, True))
        resp = self.get("/acme/nope.git/info/refs?service=git-upload-pack", "token tok")
        self.assertEqual((resp.status, resp.read()), (404, b"Repository not found\n"))
        self.assertEqual(self.git("clone", "-q", self.g.git_url("acme", "widgets"),
                                  str(self.dir / "c")).returncode, 0)
        c = self.dir / "c"
        self.git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
                 "-m", "work", cwd=c)
        refused = self.git("push", "-q", "origin", "HEAD:refs/heads/feature", cwd=c,
                           header="Authorization: token reader")
        self.assertNotEqual(refused.returncode, 0)
        pushed = self.git("push", "-q", "origin", "HEAD:refs/heads/feature", cwd=c)
        self.assertEqual(pushed.returncode, 0, pushed.stderr)
        ls = self.git("ls-remote", self.g.git_url("acme", "widgets")).stdout
        self.assertIn("refs/heads/feature", ls)

    def test_api_faults_are_not_spent_on_git_requests(self) -> None:
        self.g.add_repo("acme", "widgets", files={"a": "1"})
        self.g.fail_next(1, 500)
        done = self.git("clone", "-q", self.g.git_url("acme", "widgets"), str(self.dir / "c"))
        self.assertEqual(done.returncode, 0, done.stderr)
        resp = self.get("/api/v1/repos/acme/widgets/issues/1", "token tok")
        resp.read()
        self.assertEqual(resp.status, 500)
        self.assertFalse([r for r in self.g.requests if ".git" in r["path"]])

    def test_stop_removes_the_repositories(self) -> None:
        self.g.add_repo("acme", "widgets", files={"a": "1"})
        root = self.g.git.root
        self.assertTrue(root.is_dir())
        self.g.stop()
        self.assertFalse(root.exists())


if __name__ == "__main__":
    unittest.main()
