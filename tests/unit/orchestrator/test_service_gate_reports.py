"""The built service (`bootstrap.build` with its real `SubprocessBottleRunner`, a small stand-in
for the core CLI, the fake Gitea over HTTP): the CLI's egress refusal lines are logged with the
run and counted in `/metrics`, and the sidecar refuses a comment that holds the service's
provider key (422, nothing posted)."""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
import time
import unittest
import urllib.request
from pathlib import Path

from bot_bottle.orchestrator import bootstrap, egress_log, sidecar
from bot_bottle.orchestrator.config import Config
from bot_bottle.demo_support.fake_gitea import FakeGitea, deliver, gitea_json
from bot_bottle.demo_support.fake_gitea_payloads import issue_event
from bot_bottle.demo_support.scripted_agent import comment as sidecar_comment

SECRET = "gate-reports-secret"
PROVIDER_KEY = "sk-ant-api03-service-only-key-7Yq2Lx9Vb4Nc8Md1"

# the CLI surface the runner uses: `start` records its environment, prints the slug line and
# two refusals and exits; `logs`, `commit`, `destroy` and `list --json` succeed quietly
FAKE_CLI = textwrap.dedent("""
    import json, os, sys
    cmd = sys.argv[1]
    home = os.environ["BOT_BOTTLE_HOME"]
    if cmd == "start":
        sys.stdin.buffer.read()
        with open(os.path.join(home, "start-env.json"), "w") as f:
            json.dump(dict(os.environ), f)
        print("bot-bottle: slug=acme-widgets-1", file=sys.stderr, flush=True)
        for host in ("169.254.169.254:80: link-local address", "evil.example:443: not allowed"):
            print("bot-bottle: egress refused: " + host, file=sys.stderr, flush=True)
    if cmd == "list":
        print("[]")
""")


class ServiceGateReportsTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = home = Path(tmp.name)
        (home / "agents").mkdir()
        (home / "agents" / "claude.toml").write_text('provider = "claude"\nbottles = ["b"]\n')
        (home / "fake_cli.py").write_text(FAKE_CLI)
        self.gitea = FakeGitea().start()
        self.addCleanup(self.gitea.stop)
        g = self.gitea
        g.add_repo("acme", "widgets")
        g.add_token("tok", "claude-bot")
        g.add_org_member("agents", "claude-bot")
        self.config = Config.from_env({
            "HOME": str(home), "BOT_BOTTLE_HOME": str(home), "FORGE_GITEA_URL": g.url,
            "FORGE_TOKEN": "tok", "FORGE_AGENT_ORG": "agents", "FORGE_WEBHOOK_SECRET": SECRET,
            "FORGE_WEBHOOK_PORT": "0", "FORGE_SIDECAR_SOCKET": str(home / "s.sock"),
            "FORGE_CLONE_WORKSPACE": "0", "ANTHROPIC_API_KEY": PROVIDER_KEY,
            "BOT_BOTTLE_CLI": f"{sys.executable} {home / 'fake_cli.py'}"})

    def wait_for(self, what: str, condition) -> None:
        deadline = time.monotonic() + 15
        while not condition():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.02)

    def test_refusals_reach_the_log_and_metrics_and_a_leaking_comment_is_refused(self) -> None:
        service = bootstrap.build(self.config)
        service.start()
        self.addCleanup(service.stop)
        g = self.gitea
        n = g.add_issue("acme", "widgets", "Fix", "it", labels=("bot-bottle:claude",),
                        assignees=("claude-bot",))
        with self.assertLogs(egress_log.log, "WARNING") as logs:
            deliver(f"{service.url}/webhook", "issues", "issue_assign",
                    gitea_json(issue_event(g, "acme", "widgets", n, "assigned", "alice")), SECRET)
            self.wait_for("the CLI's refusals were never counted",
                          lambda: len(logs.records) == 2)
        run = service.store.latest_run_for_issue("acme", "widgets", n)
        self.assertEqual(logs.output[0], "WARNING:bot_bottle.orchestrator.egress_log:egress "
                         "refused: 169.254.169.254:80: link-local address "
                         f"repo=acme/widgets issue={n} run={run.id} slug=acme-widgets-1")
        with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        self.assertIn("# TYPE bot_bottle_egress_refused_total counter\n"
                      "bot_bottle_egress_refused_total 2\n", metrics)

        env = json.loads((self.home / "start-env.json").read_text())
        socket, token = env["BOT_BOTTLE_FORGE_SOCKET"], env["BOT_BOTTLE_FORGE_RUN_TOKEN"]
        with self.assertLogs(sidecar.log, "WARNING") as logs:
            status, body = sidecar_comment(socket, token, n, f"the key is {PROVIDER_KEY}")
        self.assertEqual(status, 422)
        self.assertIn("(ANTHROPIC_API_KEY", body["reason"])
        self.assertNotIn(PROVIDER_KEY, json.dumps(body) + "\n".join(logs.output))
        self.assertIn(f"issue={n} run={run.id}", logs.output[0])
        self.assertEqual(sidecar_comment(socket, token, n, "all clean")[0], 201)
        bodies = [c["body"] for c in g.comments("acme", "widgets", n)]
        self.assertTrue(any(b.startswith("all clean") for b in bodies))
        self.assertFalse([b for b in bodies if PROVIDER_KEY in b])


if __name__ == "__main__":
    unittest.main()
