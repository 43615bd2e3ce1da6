"""The real Claude Code CLI in a real bwrap bottle with the default network, the egress gate,
and no key anywhere in the bottle: the key and the fake model's URL are in bot-bottle's own
environment (the host side), the bottle gets the gate's URL and a placeholder. The model asks
claude's Bash tool to write the environment of every process it can see into the workspace;
the key is in none of it, nor in any file of the bottle or the agent log, while the fake model
(plain http on 127.0.0.1, which the gate allows for loopback upstreams) saw the real key."""

import secrets
import unittest

from bot_bottle.gate import PLACEHOLDER
from tests.support.fake_anthropic import FakeAnthropic, tool_results
from tests.integration._real_cli import CliHome, require_clis

MODEL = "claude-sonnet-4-5"
# the shape of a real key, different on every run (so no file can hold it by chance)
KEY = f"sk-ant-api03-{secrets.token_urlsafe(70)}-{secrets.token_hex(4)}AA"
PROMPT = "Record the environment of the bottle, please."
COMMAND = ("env > /workspace/env.txt && for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; "
           "done > /workspace/proc-environ.txt 2>/dev/null; echo recorded-$(wc -l < /workspace/env.txt)")


class RealClaudeThroughTheGateTest(unittest.TestCase):
    def setUp(self):
        require_clis("claude")
        self.api = FakeAnthropic("Bash").start()
        self.addCleanup(self.api.stop)
        self.cli = CliHome(self.addCleanup, "claude", model=MODEL, env={},
                           gate_env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": self.api.url})

    def test_claude_reaches_the_model_only_through_the_gate_and_never_holds_the_key(self):
        self.api.on_prompt(PROMPT, COMMAND)
        slug = self.cli.start("gated", PROMPT)
        ws = self.cli.workspace(slug)

        # the agent worked: its tool call ran and its result went back to the model
        env_lines = (ws / "env.txt").read_text().splitlines()
        requests = self.api.agent_requests()
        self.assertTrue(requests, "claude sent no messages request offering its Bash tool")
        self.assertTrue(any(f"recorded-{len(env_lines)}" in r for r in tool_results(requests[-1])))

        # the model saw the real key on every request, never the placeholder
        posts = [r for r in self.api.requests if r.method == "POST"]
        self.assertTrue(posts)
        self.assertEqual({r.headers.get("x-api-key") for r in posts}, {KEY})
        for r in posts:
            self.assertNotIn(PLACEHOLDER, str(r.headers))

        # inside: claude's environment and every process's /proc/<pid>/environ hold only the
        # placeholder and the gate's URL
        self.assertIn(f"ANTHROPIC_API_KEY={PLACEHOLDER}", env_lines)
        self.assertIn("ANTHROPIC_BASE_URL=http://127.0.0.1:3128/_upstream/anthropic", env_lines)
        proc = (ws / "proc-environ.txt").read_text(errors="replace")
        self.assertIn(f"ANTHROPIC_API_KEY={PLACEHOLDER}", proc)
        self.assertNotIn(KEY, proc)
        self.assertNotIn(self.api.url, proc, "the real upstream is the gate's business")

        # no file of the bottle's tree (home with claude's own state, workspace) holds the
        # key, nor does the agent log
        files = [p for p in self.cli.bottle(slug).rglob("*") if p.is_file() and not p.is_symlink()]
        self.assertGreater(len(files), 3)
        key = KEY.encode()
        holding = [str(p) for p in files if key in p.read_bytes()]
        self.assertEqual(holding, [])
        self.assertNotIn(key, (self.cli.home / "state" / slug / "agent.log").read_bytes())


if __name__ == "__main__":
    unittest.main()
