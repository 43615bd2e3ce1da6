"""Integration: the git gate from inside a real bwrap bottle. The orchestrator runs as a process
(`python -m bot_bottle.orchestrator run`) with the real core CLI; the agent (`push_probe.py`,
command provider, `network = "egress"`, empty allowlist) pushes with the real `git` in the
workspace the orchestrator cloned, whose origin is `http://127.0.0.1:3128/_git/...`: through
the in-bottle forwarder, the CLI's egress gate (which adds the run token), the sidecar socket
and the git gate into the fake Gitea's real bare repository (smart HTTP, `git http-backend`).

Proves: pushes to `main`, to another run's branch and a delete are refused with the gate's
reason; a push holding an `sk-ant-` key and the run token is refused naming file and line,
never the values, and the issue is told; the clean push of `bot-bottle/<slug>` lands on Gitea;
after done the service opens the PR once, and a second done opens no other.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.demo_support.fake_gitea_payloads import issue_event
from bot_bottle.demo_support.homes import PUSH_PROBE, make_scripted_home
from bot_bottle.demo_support.push_probe import PLANTED_KEY
from bot_bottle.demo_support.scripted_agent import done as post_done
from tests.integration._orchestrator import AGENT_USER as BOT, make_forge, start_orchestrator

OWNER, REPO = "acme", "widgets"
GATE = "remote: bot-bottle git gate: "


class GitGateBottleTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = make_scripted_home(Path(tmp.name), network="egress", repo=False,
                                       script=PUSH_PROBE)
        self.gitea = make_forge(self, owner=OWNER, repo=REPO)
        self.gitea.add_commit(OWNER, REPO, {"README.md": "widgets\n"})
        self.orch = start_orchestrator(self, self.home, self.gitea.url)

    def run_of(self, issue: int) -> dict:
        return next((r for r in self.orch.runs(include_destroyed=True) if r["issue_number"] == issue),
                    {"state": None, "pr_number": None})

    def report(self, slug: str) -> dict:
        tar_path = self.home / "state" / slug / "snapshots" / "latest.tar"
        with tarfile.open(tar_path) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("home/push-report.json"))
            return json.loads(tar.extractfile(member).read())

    def test_a_bottle_pushes_only_its_branch_without_secrets_and_gets_one_pr_after_done(self) -> None:
        g = self.gitea
        started = time.monotonic()
        issue = g.add_issue(OWNER, REPO, "Add a greeting", "Please greet the world.", user="alice",
                            labels=("bot-bottle:scripted",), assignees=(BOT,))
        status, body = self.orch.deliver("issues", "issue_assign",
                                         issue_event(g, OWNER, REPO, issue, "assigned", "alice"))
        self.assertEqual(status, 202, body)
        self.orch.wait_for(lambda: self.run_of(issue)["state"] == "frozen"
                           and self.run_of(issue)["pr_number"] is not None,
                           timeout=90, what="done and the PR")
        run = self.run_of(issue)
        slug, branch = run["slug"], f"bot-bottle/{run['slug']}"
        report = self.report(slug)
        self.assertEqual(report["branch"], branch)
        self.assertEqual(report["remote"], "http://127.0.0.1:3128/_git/acme/widgets.git")

        self.assertNotEqual(report["main"]["code"], 0)
        self.assertIn(f"{GATE}refused refs/heads/main: this run may push only refs/heads/{branch}",
                      report["main"]["stderr"])
        self.assertNotEqual(report["other_run"]["code"], 0)
        self.assertIn(f"{GATE}refused refs/heads/bot-bottle/someone-else", report["other_run"]["stderr"])
        self.assertNotEqual(report["delete"]["code"], 0)
        self.assertIn(f"{GATE}refused deleting refs/heads/{branch}", report["delete"]["stderr"])
        secret = report["secret"]
        self.assertNotEqual(secret["code"], 0)
        self.assertRegex(secret["stderr"], r"notes\.txt line 2 \(commit [0-9a-f]{12}\): Anthropic API key")
        self.assertRegex(secret["stderr"], r"notes\.txt line 3 \(commit [0-9a-f]{12}\): the run token")
        self.assertNotIn(PLANTED_KEY, json.dumps(report))
        run_token = self.run_token(run["id"])
        self.assertNotIn(run_token, json.dumps(report))

        self.assertEqual(report["clean"]["code"], 0, report["clean"]["stderr"])
        self.assertIn(f"{GATE}delivered {report['head'][:12]} to Gitea as {branch}",
                      report["clean"]["stderr"])
        self.assertEqual(self.gitea_ref(f"refs/heads/{branch}"), report["head"])
        self.assertIsNone(self.gitea_ref("refs/heads/bot-bottle/someone-else"))

        [pr] = g.prs(OWNER, REPO)
        self.assertEqual((pr["number"], pr["title"], pr["pr"]["head"], pr["pr"]["base"]),
                         (run["pr_number"], "Add a greeting", branch, "main"))
        self.assertIn(f"/runs/{run['id']}/provenance", pr["body"])
        self.orch.wait_for(lambda: any("The git gate refused a push" in c["body"]
                                       for c in g.comments(OWNER, REPO, issue)), timeout=30)
        said = [c["body"] for c in g.comments(OWNER, REPO, issue) if "git gate refused" in c["body"]]
        self.assertIn("`notes.txt` line 2", said[0])
        self.assertNotIn(PLANTED_KEY, said[0])
        self.assertNotIn(run_token, said[0])

        # a second done (the run is frozen now) opens no other PR; its comment goes to the PR
        sock = str(self.home / "sidecar.sock")
        self.assertEqual(post_done(sock, run_token, "done", "again")[0], 202)
        self.orch.wait_for(lambda: self.run_of(issue)["last_done_summary"] == "again", timeout=30)
        self.orch.wait_for(lambda: any("again" in c["body"] for c in g.comments(OWNER, REPO, pr["number"])),
                           timeout=30)
        self.assertEqual(len(g.prs(OWNER, REPO)), 1)
        kinds = [op["kind"] for op in self.orch.provenance(run["id"])["ops"]]
        self.assertEqual(kinds.count("git.push"), 5)
        self.assertEqual(kinds.count("pr_opened"), 1)
        self.assertLess(time.monotonic() - started, 90)

    def run_token(self, run_id: int) -> str:
        db = sqlite3.connect(self.orch.db_path)
        try:
            return db.execute("SELECT run_token FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        finally:
            db.close()

    def gitea_ref(self, ref: str) -> str | None:
        bare = self.gitea.git.bare(OWNER, REPO, "main")
        done = subprocess.run(["git", "-C", str(bare), "rev-parse", "--verify", "--quiet", ref],
                              capture_output=True, text=True)
        return done.stdout.strip() or None


if __name__ == "__main__":
    unittest.main()
