"""The git gate end to end on the host (no sandbox): real git, the real in-bottle forwarder, the
CLI's egress gate relaying `/_git/` with the run token, the service's sidecar socket, the gate
repository with its pre-receive hook, and the fake Gitea's real bare repository
(`_git_gate.GitGateHarness`). What the agent's git is told, what lands on Gitea, what the
service records and says on the issue. The same chain from inside a bwrap bottle is
`tests/integration/test_git_gate.py`."""

from __future__ import annotations

import json
import os
import stat
import unittest

from bot_bottle.orchestrator.git_gate import PUSH_OP
from bot_bottle.demo_support.scripted_agent import UnixHTTPConnection

from ._git_gate import OWNER, REPO, TOKEN, GitGateHarness

KEY = "sk-ant-api03-" + "Pq7_rS-t" * 8


class GitGateTest(unittest.TestCase):
    def setUp(self) -> None:
        self.h = GitGateHarness(self)
        self.run_, self.checkout = self.h.make_run()
        self.branch = f"bot-bottle/{self.run_.expected_slug}"

    def push(self, *args: str):
        return self.h.git(self.run_, self.checkout, "push", "origin", *args)

    def pushes(self) -> list[dict]:
        return [op.detail for op in self.h.store.op_log(self.run_.id) if op.kind == PUSH_OP]

    def test_a_clean_push_of_the_runs_branch_lands_on_gitea_and_is_recorded(self) -> None:
        sha = self.h.commit(self.checkout, {"hello.txt": "hello\n"})
        done = self.push("HEAD")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"remote: bot-bottle git gate: delivered {sha[:12]} to Gitea as {self.branch}",
                      done.stderr)
        self.assertEqual(self.h.gitea_ref(f"refs/heads/{self.branch}"), sha)
        self.assertEqual([p["result"] for p in self.pushes()], ["pushed"])
        # Gitea only ever saw the orchestrator's token; the checkout's remote holds none
        self.assertEqual({r["user"] for r in self.h.gitea.git_requests}, {"orchestrator"})
        config = (self.checkout / ".git" / "config").read_text()
        self.assertIn("url = http://127.0.0.1:3128/_git/acme/widgets.git", config)
        self.assertNotIn(TOKEN, config)

    def test_a_pack_larger_than_gits_post_buffer_is_sent_chunked_and_lands(self) -> None:
        (self.checkout / "data.bin").write_bytes(os.urandom(3 << 19))   # 1.5 MiB, incompressible
        sha = self.h.commit(self.checkout, {"data.txt": "binary data\n"})
        done = self.push("HEAD")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(self.h.gitea_ref(f"refs/heads/{self.branch}"), sha)

    def test_refs_other_than_the_runs_branch_are_refused_with_a_reason_git_prints(self) -> None:
        self.h.commit(self.checkout, {"hello.txt": "hello\n"})
        self.assertEqual(self.push("HEAD").returncode, 0)
        main = self.h.gitea_ref("refs/heads/main")
        cases = [
            ("main", ("HEAD:main",), "refused refs/heads/main: this run may push only "
                                     f"refs/heads/{self.branch} (git push origin HEAD:{self.branch})"),
            ("another run's branch", ("HEAD:bot-bottle/acme-widgets-2",),
             "refused refs/heads/bot-bottle/acme-widgets-2"),
            ("a tag", ("HEAD:refs/tags/v1",), "refused refs/tags/v1"),
            ("a delete of its own branch", (f":{self.branch}",),
             f"refused deleting refs/heads/{self.branch}: the gate does not delete branches"),
        ]
        for name, args, reason in cases:
            with self.subTest(name):
                done = self.push(*args)
                self.assertNotEqual(done.returncode, 0, done.stderr)
                self.assertIn(f"remote: bot-bottle git gate: {reason}", done.stderr)
                self.assertIn("(pre-receive hook declined)", done.stderr)
        self.assertEqual(self.h.gitea_ref("refs/heads/main"), main)
        self.assertIsNone(self.h.gitea_ref("refs/heads/bot-bottle/acme-widgets-2"))
        self.assertIsNone(self.h.gitea_ref("refs/tags/v1"))
        self.assertIsNotNone(self.h.gitea_ref(f"refs/heads/{self.branch}"))
        self.assertEqual([p["result"] for p in self.pushes()], ["pushed"] + ["refused"] * 4)

    def test_a_push_holding_secrets_is_refused_naming_file_and_line_and_said_on_the_issue(self) -> None:
        token = self.run_.run_token
        self.h.commit(self.checkout, {"notes.txt": f"todo\nkey = {KEY}\nrun {token}\n"}, "notes")
        sha = self.h.commit(self.checkout, {"docs.md": "widgets\n"}, f"docs\n\nforge {TOKEN}\n")
        done = self.push("HEAD")
        self.assertNotEqual(done.returncode, 0)
        err = done.stderr
        self.assertIn("remote: bot-bottle git gate: refused: the push holds what looks like a "
                      "secret; nothing reached Gitea:", err)
        self.assertRegex(err, r"notes\.txt line 2 \(commit [0-9a-f]{12}\): Anthropic API key")
        self.assertRegex(err, r"notes\.txt line 3 \(commit [0-9a-f]{12}\): the run token")
        self.assertIn(f"commit message line 3 (commit {sha[:12]}): FORGE_TOKEN", err)
        for value in (KEY, token, TOKEN):
            self.assertNotIn(value, err)
        self.assertIsNone(self.h.gitea_ref(f"refs/heads/{self.branch}"))
        [refused] = self.pushes()
        self.assertEqual((refused["result"], refused["reason"]), ("refused", "secret"))
        self.assertEqual(sorted((f["file"] or "", f["line"], f["kind"]) for f in refused["findings"]),
                         [("", 3, "FORGE_TOKEN"), ("notes.txt", 2, "Anthropic API key"),
                          ("notes.txt", 3, "the run token")])
        [comment] = self.h.store.due_outbox(10 ** 12)
        self.assertEqual(comment.number, self.run_.issue_number)
        self.assertIn(f"The git gate refused a push to `{self.branch}`", comment.body)
        self.assertIn("`notes.txt` line 2", comment.body)
        self.assertIn("the commit message line 3", comment.body)
        for value in (KEY, token, TOKEN):
            self.assertNotIn(value, comment.body)
        self.assertNotIn(KEY, json.dumps([op.detail for op in self.h.store.op_log(self.run_.id)]))

    def test_the_runs_branch_may_be_forced_and_a_stale_push_is_refused_by_the_agents_git(self) -> None:
        self.h.commit(self.checkout, {"a.txt": "1\n"})
        self.assertEqual(self.push("HEAD").returncode, 0)
        self.h.git(self.run_, self.checkout, "commit", "-q", "--amend", "-m", "amended")
        self.assertNotEqual(self.push("HEAD").returncode, 0, "not a fast-forward without --force")
        forced = self.push("--force", "HEAD")
        self.assertEqual(forced.returncode, 0, forced.stderr)
        head = self.h.git(self.run_, self.checkout, "rev-parse", "HEAD").stdout.strip()
        self.assertEqual(self.h.gitea_ref(f"refs/heads/{self.branch}"), head)
        # a maintainer adds a commit to the branch on Gitea: the agent's plain push is told so
        theirs = self.h.gitea.add_commit(OWNER, REPO, {"b.txt": "theirs\n"}, "theirs",
                                         branch=self.branch)
        self.h.commit(self.checkout, {"c.txt": "mine\n"})
        stale = self.push("HEAD")
        self.assertNotEqual(stale.returncode, 0)
        self.assertIn("[rejected]", stale.stderr)
        self.assertEqual(self.h.gitea_ref(f"refs/heads/{self.branch}"), theirs)

    def test_a_push_gitea_refuses_fails_for_the_agent_with_gitea_s_reason(self) -> None:
        with self.h.gitea.lock:   # the service's token may read but no longer write
            self.h.gitea.scopes[TOKEN] = {"read:repository", "write:issue"}
        self.h.commit(self.checkout, {"a.txt": "1\n"})
        done = self.push("HEAD")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("remote: bot-bottle git gate: Gitea refused the push:", done.stderr)
        self.assertIsNone(self.h.gitea_ref(f"refs/heads/{self.branch}"))
        self.assertEqual([p["result"] for p in self.pushes()], ["failed"])

    def test_a_fetch_sees_gitea_s_default_branch_and_the_runs_branch_only(self) -> None:
        self.h.gitea.add_commit(OWNER, REPO, {"x.txt": "other run\n"}, "other",
                                branch="bot-bottle/acme-widgets-9")
        new_main = self.h.gitea.add_commit(OWNER, REPO, {"main.txt": "later\n"}, "later")
        listed = self.h.git(self.run_, self.checkout, "ls-remote", "origin")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(f"{new_main}\trefs/heads/main", listed.stdout)
        self.assertNotIn("acme-widgets-9", listed.stdout)
        fetched = self.h.git(self.run_, self.checkout, "fetch", "-q", "origin")
        self.assertEqual(fetched.returncode, 0, fetched.stderr)
        self.assertEqual(self.h.git(self.run_, self.checkout, "rev-parse", "origin/main").stdout.strip(),
                         new_main)

    def test_the_gate_repository_is_private_and_holds_no_token(self) -> None:
        self.h.commit(self.checkout, {"a.txt": "1\n"})
        self.assertEqual(self.push("HEAD").returncode, 0)
        gates = self.h.home / "gates"
        repo = gates / f"{self.run_.expected_slug}.git"
        for path in (gates, repo):
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o700, path)
        leaks = [p for p in gates.rglob("*") if p.is_file()
                 and (TOKEN.encode() in p.read_bytes() or self.run_.run_token.encode() in p.read_bytes())]
        self.assertEqual(leaks, [])
        self.assertEqual(sorted(p.name for p in gates.iterdir()), [repo.name], "no reports left")

    def test_the_socket_refuses_requests_without_the_run_token_or_for_another_repository(self) -> None:
        def get(path: str, token: str | None) -> tuple[int, str]:
            conn = UnixHTTPConnection(str(self.h.root / "sidecar.sock"))
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
                resp = conn.getresponse()
                return resp.status, resp.read().decode()
            finally:
                conn.close()
        refs = "/git/acme/widgets.git/info/refs?service=git-upload-pack"
        token = self.run_.run_token
        self.assertEqual(get(refs, None)[0], 401)
        self.assertEqual(get(refs, "not-a-run-token")[0], 401)
        self.assertEqual(get("/git/acme/gadgets.git/info/refs?service=git-upload-pack", token),
                         (403, "bot-bottle git gate: this run reaches only acme/widgets\n"))
        self.assertEqual(get("/git/acme/widgets.git/info/refs", token)[0], 403)  # dumb HTTP
        self.assertEqual(get("/git/acme/widgets.git/HEAD", token)[0], 404)
        self.assertEqual(get("/git/acme/widgets.git/git-receive-pack", token)[0], 405)
        status, body = get(refs, token)
        self.assertEqual(status, 200)
        self.assertIn("# service=git-upload-pack", body)


if __name__ == "__main__":
    unittest.main()
