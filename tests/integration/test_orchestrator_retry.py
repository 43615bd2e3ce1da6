"""A run whose clone failed is launched again by a trusted comment, seen from outside:
`python -m bot_bottle.orchestrator run` as a real process, the real core CLI, the scripted
agent in a real bwrap bottle, the issue's repository served by the fake Gitea over git smart
HTTP. The orchestrator's token first lacks the repository scope (the clone is refused: the
run fails, and the issue is told a comment retries it); once the token is fixed, a comment by
a user with write access makes the same run clone, start and finish, its prompt the issue's
followed by the comment."""

from __future__ import annotations

import unittest

from bot_bottle.demo_support.fake_gitea_payloads import comment_event, issue_event
from tests.integration._core_home import make_home
from tests.integration._orchestrator import AGENT_USER, TOKEN, make_forge, start_orchestrator

OWNER, REPO = "acme", "widgets"
RETRY = "Gitea access fixed; please try again."


class RetryAfterFailedCloneTest(unittest.TestCase):
    def test_a_trusted_comment_launches_a_run_whose_clone_failed_again_with_the_comment(
            self) -> None:
        home = make_home(self)
        g = make_forge(self, owner=OWNER, repo=REPO)
        g.add_commit(OWNER, REPO, {"README.md": "widgets\n"})
        g.add_token(TOKEN, "orchestrator", scopes=("write:issue", "read:organization"))
        orch = start_orchestrator(self, home, g.url, extra_env={"FORGE_OUTBOX_BACKOFF": "0.5"})
        n = g.add_issue(OWNER, REPO, "Fix it", "details", user="alice",
                        labels=("bot-bottle:scripted",), assignees=(AGENT_USER,))
        self.assertEqual(orch.deliver("issues", "issue_assign",
                                      issue_event(g, OWNER, REPO, n, "assigned", "alice"))[0], 202)

        def failure_comment():
            return next((c["body"] for c in g.comments(OWNER, REPO, n)
                         if "Could not run the agent" in c["body"]), None)
        said = orch.wait_for(failure_comment, timeout=60, what="the failure comment")
        self.assertIn("could not clone acme/widgets", said)
        self.assertIn("Comment to retry.", said)
        [failed] = orch.runs()
        self.assertEqual((failed["state"], failed["slug"]), ("failed", None))

        g.add_token(TOKEN, "orchestrator")  # the operator fixes the token's scopes
        cid = g.add_comment(OWNER, REPO, n, RETRY, "alice")
        self.assertEqual(orch.deliver("issue_comment", "issue_comment",
                                      comment_event(g, OWNER, REPO, n, cid, "alice"))[0], 202)
        # the done status is recorded at once, the state once the freeze (on a worker) ended
        orch.wait_for(lambda: (orch.runs()[0]["last_done_status"], orch.runs()[0]["state"])
                      == ("done", "frozen"), timeout=90, what="the relaunched run done, frozen")
        [run] = orch.runs()
        self.assertEqual((run["id"], run["state"], run["slug"], run["error"]),
                         (failed["id"], "frozen", "acme-widgets-1", None))
        prompt = (home / "state" / "acme-widgets-1" / "prompt.txt").read_text()
        self.assertTrue(prompt.startswith(f"acme/widgets#{n}: Fix it\n\ndetails"), prompt[:200])
        self.assertTrue(prompt.endswith(f"\n\n{RETRY}"), prompt[-200:])
        moves = [(op["detail"]["from"], op["detail"]["to"])
                 for op in orch.provenance(run["id"])["ops"] if op["kind"] == "transition"]
        self.assertIn(("failed", "queued"), moves)
        self.assertEqual(orch.stop(), 0, orch.log())


if __name__ == "__main__":
    unittest.main()
