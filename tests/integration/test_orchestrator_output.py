"""Memory stays bounded whatever an agent prints, seen from outside: `python -m
bot_bottle.orchestrator run` as a real process with the real core CLI and a real bwrap
bottle, whose agent (the `command` provider, a shell pipeline) writes 400 MB to stderr
without a newline. The service's peak RSS (VmHWM of its own process) stays under 60 MB —
it reached 442 MB when the runner read the CLI's output a whole line at a time — and the
exit comment on the issue quotes the log's last lines, each cut short."""

from __future__ import annotations

import unittest
from pathlib import Path

from bot_bottle.demo_support.fake_gitea_payloads import issue_event
from tests.integration._core_home import make_home
from tests.integration._orchestrator import AGENT_USER, make_forge, start_orchestrator

OWNER, REPO = "acme", "widgets"
NOISE_BYTES = 400_000_000
RSS_LIMIT_KB = 60 * 1024


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


class OrchestratorOutputTest(unittest.TestCase):
    def test_400_mb_on_stderr_without_a_newline_keeps_the_service_small(self) -> None:
        home = make_home(self)
        (home / "agents" / "noisy.toml").write_text(
            'provider = "command"\nbottles = ["plain"]\n'
            f'command = ["sh", "-c", "head -c {NOISE_BYTES} /dev/zero | tr \'\\\\0\' x >&2"]\n')
        (home / "bottles" / "plain.toml").write_text('network = "none"\n')
        g = make_forge(self, owner=OWNER, repo=REPO)
        g.add_commit(OWNER, REPO, {"README.md": "widgets\n"})
        orch = start_orchestrator(self, home, g.url, extra_env={"FORGE_OUTBOX_BACKOFF": "0.5"})
        issue = g.add_issue(OWNER, REPO, "Be loud", "Print a lot.", user="alice",
                            labels=("bot-bottle:noisy",), assignees=(AGENT_USER,))
        status, body = orch.deliver("issues", "issue_assign",
                                    issue_event(g, OWNER, REPO, issue, "assigned", "alice"))
        self.assertEqual(status, 202, body)

        def exit_comment():
            return next((c["body"] for c in g.comments(OWNER, REPO, issue)
                         if "without signalling done" in c["body"]), None)
        comment = orch.wait_for(exit_comment, timeout=90, what="the exit comment")

        peak = peak_rss_kb(orch.pid)
        self.assertLess(peak, RSS_LIMIT_KB, f"the service peaked at {peak} kB")
        self.assertIn("The agent exited (code 0) without signalling done", comment)
        quoted = comment.split("```\n", 1)[1].rsplit("\n```", 1)[0].splitlines()
        self.assertTrue(quoted, comment[:500])
        self.assertLessEqual(len(quoted), 20)
        self.assertTrue(all(len(line) <= 310 for line in quoted), [len(x) for x in quoted])
        self.assertTrue(any(line.startswith("x" * 300) for line in quoted), quoted)
        self.assertLess(len(comment), 20_000)


if __name__ == "__main__":
    unittest.main()
