"""The PR the service opens after done (`pr_opener`, the `OpenPr` action) through the real
path: the agent's `POST /done` on the sidecar socket, the relay, the dispatcher's pass, the
executor (the bottle runner is a fake; git, the gate and the fake Gitea are real)."""

from __future__ import annotations

import unittest

from bot_bottle.orchestrator.sidecar import PR_OPENED
from bot_bottle.demo_support.fake_gitea import gitea_json
from bot_bottle.demo_support.fake_gitea_payloads import close_issue, issue_event
from bot_bottle.demo_support.scripted_agent import done as post_done

from ._fakes import FakeBottleRunner
from ._git_gate import OWNER, REPO, TOKEN, GitGateHarness


class OpenPrAfterDoneTest(unittest.TestCase):
    def setUp(self) -> None:
        self.runner = FakeBottleRunner()
        self.h = GitGateHarness(self, runner=self.runner)
        self.run_, self.checkout = self.h.make_run(title="Add a greeting")
        self.runner.states[self.run_.expected_slug] = "running"
        self.branch = f"bot-bottle/{self.run_.expected_slug}"

    def done(self, status: str = "done", summary: str = "greeted") -> None:
        code, _ = post_done(str(self.h.root / "sidecar.sock"), self.run_.run_token, status, summary)
        self.assertEqual(code, 202)
        self.h.service.relay.tick()
        self.h.service.orchestrator.process_pending()
        self.assertTrue(self.h.service.orchestrator.wait_idle(30))
        self.h.service.orchestrator.process_pending()  # what the operations said on the issue

    def run_now(self):
        return self.h.store.get_run(self.run_.id)

    def comments(self, number: int) -> list[str]:
        return [c["body"] for c in self.h.gitea.comments(OWNER, REPO, number)]

    def test_done_after_a_push_opens_one_pr_from_the_branch_and_records_it(self) -> None:
        self.h.commit(self.checkout, {"hello.txt": "hello\n"})
        self.assertEqual(self.h.git(self.run_, self.checkout, "push", "origin", "HEAD").returncode, 0)
        self.done()
        [pr] = self.h.gitea.prs(OWNER, REPO)
        self.assertEqual((pr["title"], pr["pr"]["head"], pr["pr"]["base"], pr["user"]),
                         ("Add a greeting", self.branch, "main", "orchestrator"))
        self.assertIn("For #1: the work of bot-bottle run 1 (agent `scripted`), 1 commit on "
                      f"`{self.branch}`", pr["body"])
        self.assertIn("Provenance: https://bot-bottle.example/runs/1/provenance", pr["body"])
        run = self.run_now()
        self.assertEqual((run.state.value, run.pr_number), ("frozen", pr["number"]))
        opened = [op.detail for op in self.h.store.op_log(run.id) if op.kind == PR_OPENED]
        self.assertEqual(opened, [{"number": pr["number"], "by": "git gate"}])
        # the first done comment is on the issue; the PR is in the run's write scope now
        self.assertEqual(len(self.comments(1)), 1)
        self.assertTrue(self.comments(1)[0].startswith("Agent finished with status **done**"))

        # a second done (after more work) opens no other PR and comments on the PR
        self.h.commit(self.checkout, {"hello.txt": "hello again\n"})
        self.assertEqual(self.h.git(self.run_, self.checkout, "push", "origin", "HEAD").returncode, 0)
        self.done(summary="again")
        self.assertEqual(len(self.h.gitea.prs(OWNER, REPO)), 1)
        self.assertEqual((len(self.comments(1)), len(self.comments(pr["number"]))), (1, 1))
        self.assertIn("again", self.comments(pr["number"])[0])

    def test_done_without_new_commits_on_gitea_opens_nothing(self) -> None:
        self.h.commit(self.checkout, {"hello.txt": "local only\n"})   # never pushed
        self.done()
        self.assertEqual(self.h.gitea.prs(OWNER, REPO), [])
        self.assertIsNone(self.run_now().pr_number)
        self.assertEqual(len(self.comments(1)), 1, "only the done comment")

    def test_blocked_opens_nothing_even_with_pushed_commits(self) -> None:
        self.h.commit(self.checkout, {"hello.txt": "half done\n"})
        self.assertEqual(self.h.git(self.run_, self.checkout, "push", "origin", "HEAD").returncode, 0)
        self.done("blocked", "need help")
        self.assertEqual(self.h.gitea.prs(OWNER, REPO), [])

    def test_a_pr_that_cannot_be_opened_is_said_on_the_issue_and_tried_again_at_the_next_done(self) -> None:
        self.h.commit(self.checkout, {"hello.txt": "hello\n"})
        self.assertEqual(self.h.git(self.run_, self.checkout, "push", "origin", "HEAD").returncode, 0)
        # a token that may read the repository but not open the PR
        self.h.gitea.add_token(TOKEN, "orchestrator",
                               scopes=("write:issue", "read:repository", "read:organization"))
        self.done()
        self.assertEqual(self.h.gitea.prs(OWNER, REPO), [])
        bodies = self.comments(1)
        self.assertTrue(any(b.startswith("Could not open a pull request for the agent's branch:")
                            and "The next done signal tries again." in b for b in bodies), bodies)
        self.h.gitea.add_token(TOKEN, "orchestrator")  # the operator fixes its scopes
        self.done()
        self.assertEqual(len(self.h.gitea.prs(OWNER, REPO)), 1)

    def test_a_destroyed_run_leaves_no_gate_repository(self) -> None:
        self.h.commit(self.checkout, {"hello.txt": "hello\n"})
        self.assertEqual(self.h.git(self.run_, self.checkout, "push", "origin", "HEAD").returncode, 0)
        repo = self.h.home / "gates" / f"{self.run_.expected_slug}.git"
        self.assertTrue(repo.is_dir())
        g = self.h.gitea
        close_issue(g, OWNER, REPO, 1)
        self.h.store.record_delivery("close-1", "issues",
                                     gitea_json(issue_event(g, OWNER, REPO, 1, "closed", "alice")), 0.0)
        self.h.service.orchestrator.process_pending()
        self.assertTrue(self.h.service.orchestrator.wait_idle(30))
        self.h.service.orchestrator.process_pending()  # what the operations said on the issue
        self.assertEqual(self.run_now().state.value, "destroyed")
        self.assertFalse(repo.exists())


if __name__ == "__main__":
    unittest.main()
