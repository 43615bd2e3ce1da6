"""Lifecycle faults seen from outside, through `python -m bot_bottle.orchestrator run` as a
real process, the real core CLI and real bwrap bottles:

- an agent that POSTs /done and exits gets exactly one comment for it (the exit is not also
  reported as an exit without done), over ten runs;
- closing the issue while its run is `starting` leaves no bottle and no agent process, even
  though the start in flight makes its bottle after the close (the CLI waits at a gate,
  `_gated_cli`, until the run is destroyed);
- `/bot-bottle stop` while the run is `starting` stops the agent its start runs once the
  bottle exists: the bottle is frozen, no agent process is left.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import sys
import unittest
import uuid
from pathlib import Path

from bot_bottle.demo_support.fake_gitea_payloads import close_issue, comment_event, issue_event
from tests.integration import _gated_cli
from tests.integration._core_home import cli, make_home
from tests.integration._orchestrator import AGENT_USER as BOT, make_forge, start_orchestrator

OWNER, REPO = "acme", "widgets"
EXITED = "without signalling done"
FINISHED = "Agent finished with status **done**"


def unsent_comments(db_path: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL "
                            "AND dropped_at IS NULL").fetchone()[0]
    finally:
        conn.close()


def processes_with(token: str) -> list[int]:
    """Live processes whose command line contains `token` (zombies have none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry))
    return found


def kill_all(token: str) -> None:
    for pid in processes_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class OneCommentPerDoneTest(unittest.TestCase):
    RUNS = 10

    def test_ten_agents_that_signal_done_and_exit_each_get_exactly_one_comment(self) -> None:
        home = make_home(self)
        g = make_forge(self, owner=OWNER, repo=REPO)
        orch = start_orchestrator(self, home, g.url)
        issues = [g.add_issue(OWNER, REPO, f"task {i}", "do it", user="alice",
                              labels=("bot-bottle:scripted",), assignees=(BOT,))
                  for i in range(self.RUNS)]
        for n in issues:
            status, body = orch.deliver("issues", "issue_assign",
                                        issue_event(g, OWNER, REPO, n, "assigned", "alice"))
            self.assertEqual(status, 202, body)

        def settled():
            runs = orch.runs()
            return (len(runs) == self.RUNS
                    and all(r["state"] == "frozen" and r["last_done_status"] == "done"
                            for r in runs)
                    and unsent_comments(orch.db_path) == 0 and runs)
        runs = orch.wait_for(settled, timeout=180, interval=0.2, what="every run done, frozen "
                             "and every comment sent")
        for run in runs:
            with self.subTest(issue=run["issue_number"]):
                ours = [c["body"] for n in (run["issue_number"], run["pr_number"])
                        for c in g.comments(OWNER, REPO, n)]
                self.assertEqual(sum(FINISHED in b for b in ours), 1, ours)
                self.assertEqual([b for b in ours if EXITED in b], [])
        self.assertEqual(orch.stop(), 0, orch.log())


class WhileStartingTest(unittest.TestCase):
    """A run whose start waits at the gate (no bottle yet) while its agent is a sleeper."""

    def start_gated(self):
        home = make_home(self)
        token = f"waiting-agent-{uuid.uuid4().hex}"  # finds the agent's processes in /proc
        (home / "agents" / "waiter.toml").write_text(
            'provider = "command"\nbottles = ["b1"]\n'
            f'command = ["python3", "-c", "import time; time.sleep(3600)", "{token}"]\n')
        self.addCleanup(kill_all, token)
        g = make_forge(self, owner=OWNER, repo=REPO)
        cli = f"{shlex.quote(sys.executable)} -m tests.integration._gated_cli bot_bottle"
        orch = start_orchestrator(self, home, g.url, cli=cli)
        n = g.add_issue(OWNER, REPO, "wait for me", "x", user="alice",
                        labels=("bot-bottle:waiter",), assignees=(BOT,))
        self.assertEqual(orch.deliver("issues", "issue_assign",
                                      issue_event(g, OWNER, REPO, n, "assigned", "alice"))[0], 202)
        [cli_pid] = orch.wait_for(lambda: _gated_cli.waiting_pids(home), timeout=30,
                                  what="the start to wait at the gate")
        [run] = orch.runs()
        self.assertEqual(run["state"], "starting")
        return home, token, g, orch, n, cli_pid

    def test_stop_while_the_bottle_starts_freezes_it_once_made_and_no_agent_runs_on(self) -> None:
        home, token, g, orch, n, cli_pid = self.start_gated()
        stop = g.add_comment(OWNER, REPO, n, "/bot-bottle stop", "alice")
        self.assertEqual(orch.deliver("issue_comment", "issue_comment",
                                      comment_event(g, OWNER, REPO, n, stop, "alice"))[0], 202)
        orch.wait_for(lambda: orch.runs()[0]["state"] == "frozen", timeout=30,
                      what="the run frozen by the stop")
        _gated_cli.open_gate(home)  # the start in flight now makes its bottle
        orch.wait_for(lambda: _gated_cli.ended(cli_pid), timeout=30,
                      what="the start to end (its bottle frozen)")
        self.assertEqual(processes_with(token), [], "the agent runs on after the stop")
        [run] = orch.runs()
        self.assertEqual((run["state"], run["slug"]), ("frozen", "acme-widgets-1"))
        listed = cli(home, "list", "--json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual([(b["slug"], b["state"]) for b in json.loads(listed.stdout)],
                         [("acme-widgets-1", "frozen")])
        self.assertEqual(orch.stop(), 0, orch.log())

    def test_closing_the_issue_while_its_bottle_starts_leaves_no_bottle_and_no_agent(self) -> None:
        home, token, g, orch, n, cli_pid = self.start_gated()
        close_issue(g, OWNER, REPO, n)
        self.assertEqual(orch.deliver("issues", "issues",
                                      issue_event(g, OWNER, REPO, n, "closed", "alice"))[0], 202)
        orch.wait_for(lambda: orch.runs(include_destroyed=True)[0]["state"] == "destroyed",
                      timeout=30, what="the run destroyed")
        _gated_cli.open_gate(home)  # the start in flight now makes its bottle

        orch.wait_for(lambda: _gated_cli.ended(cli_pid), timeout=30,
                      what="the start to end (its bottle destroyed)")
        orch.wait_for(lambda: not (home / "state" / "acme-widgets-1").exists(), timeout=30,
                      what="no bottle state left")
        self.assertEqual(processes_with(token), [], "an agent process outlived its bottle")
        self.assertEqual(orch.stop(), 0, orch.log())


if __name__ == "__main__":
    unittest.main()
