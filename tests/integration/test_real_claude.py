"""The real Claude Code CLI (`.ci/agents`, installed by `bash .ci/setup`) in a real bwrap
bottle through `bot-bottle start/commit/resume`, against the fake Anthropic Messages API
(streamed): the model's shell tool call changes the workspace, a resume carries the earlier
conversation, skills are listed, and prompts that look like options or files arrive verbatim."""

import json
import unittest

from bot_bottle.testing.fake_anthropic import (FakeAnthropic, tool_calls, tool_results,
                                               user_texts)
from tests.integration._real_cli import NASTY_PROMPTS, CliHome, require_clis

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test-claude-key"
SKILL_DESCRIPTION = "Zanzibar-marker skill for fixing flaky tests."
SKILL = f"---\nname: fixit\ndescription: {SKILL_DESCRIPTION}\n---\n\nRerun the test twice.\n"


class RealClaudeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_clis("claude")
        cls.api = FakeAnthropic("Bash").start()
        cls.addClassCleanup(cls.api.stop)
        cls.cli = CliHome(cls.addClassCleanup, "claude", model=MODEL, skills={"fixit": SKILL},
                          env={"ANTHROPIC_BASE_URL": cls.api.url, "ANTHROPIC_API_KEY": KEY})

    def run_agent(self, action, *args, **kw):
        """Run a bot-bottle command; the agent requests it caused, and its result."""
        before = len(self.api.agent_requests())
        result = action(*args, **kw)
        requests = self.api.agent_requests()[before:]
        self.assertTrue(requests, "claude sent no messages request offering its Bash tool")
        return requests, result

    def test_a_tool_call_changes_the_workspace_and_a_resume_continues_the_conversation(self):
        first, second = "- bullet", "- fix the test\n- and the docs"
        self.api.on_prompt(first, "printf one > /workspace/one.txt && echo wrote-one")
        self.api.on_prompt(second, "printf two > /workspace/two.txt && echo wrote-two")
        requests, slug = self.run_agent(self.cli.start, "flow", first)
        self.assertEqual((self.cli.workspace(slug) / "one.txt").read_text(), "one")
        self.assertEqual((self.cli.workspace(slug) / "README").read_text(), "hello\n")
        self.assertIn(first, user_texts(requests[0]), "the prompt is its own, verbatim text")
        self.assertEqual(requests[0]["model"], MODEL)
        self.assertIn(SKILL_DESCRIPTION, json.dumps(requests[0]), "the skill is listed")
        self.assertTrue(any("wrote-one" in r for r in tool_results(requests[-1])))
        keys = {r.headers.get("x-api-key") for r in self.api.requests if r.method == "POST"}
        self.assertEqual(keys, {KEY})

        self.cli.commit(slug)
        requests, _ = self.run_agent(self.cli.resume, slug, second)
        self.assertEqual((self.cli.workspace(slug) / "two.txt").read_text(), "two")
        self.assertEqual((self.cli.workspace(slug) / "one.txt").read_text(), "one")
        resumed = requests[0]
        self.assertIn(first, user_texts(resumed), "the first prompt is in the history")
        self.assertIn({"command": "printf one > /workspace/one.txt && echo wrote-one"},
                      tool_calls(resumed))
        self.assertTrue(any("wrote-one" in r for r in tool_results(resumed)))
        self.assertEqual(user_texts(resumed)[-1], second)

    def test_prompts_that_look_like_options_or_files_arrive_verbatim(self):
        for name, prompt in NASTY_PROMPTS.items():
            with self.subTest(name):
                requests, _ = self.run_agent(self.cli.start, f"nasty-{name}", prompt,
                                             via_file=(name == "big"))
                self.assertIn(prompt, user_texts(requests[0]))


if __name__ == "__main__":
    unittest.main()
