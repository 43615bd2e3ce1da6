"""The real pi coding agent (`.ci/agents`, installed by `bash .ci/setup`, on Node.js 22 from
there) in a real bwrap bottle through `bot-bottle start/commit/resume`, against the fake
Anthropic Messages API (streamed; pi's base URL comes from the models.json the provider
writes): the model's bash tool call changes the workspace, a resume carries the earlier
conversation, `--skill` skills are listed, and prompts that look like options or files
arrive verbatim (pi trims surrounding whitespace, so the prompts have none)."""

import json
import unittest

from bot_bottle.testing.fake_anthropic import (FakeAnthropic, tool_calls, tool_results,
                                               user_texts)
from tests.integration._real_cli import NASTY_PROMPTS, CliHome, require_clis

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test-pi-key"
SKILL_DESCRIPTION = "Zanzibar-marker skill for fixing flaky tests."
SKILL = f"---\nname: fixit\ndescription: {SKILL_DESCRIPTION}\n---\n\nRerun the test twice.\n"


class RealPiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_clis("pi")
        cls.api = FakeAnthropic("bash").start()
        cls.addClassCleanup(cls.api.stop)
        cls.cli = CliHome(cls.addClassCleanup, "pi", model=MODEL, skills={"fixit": SKILL},
                          env={"ANTHROPIC_BASE_URL": cls.api.url, "ANTHROPIC_API_KEY": KEY})

    def run_agent(self, action, *args, **kw):
        """Run a bot-bottle command; the agent requests it caused, and its result."""
        before = len(self.api.agent_requests())
        result = action(*args, **kw)
        requests = self.api.agent_requests()[before:]
        self.assertTrue(requests, "pi sent no messages request offering its bash tool")
        return requests, result

    def test_a_tool_call_changes_the_workspace_and_a_resume_continues_the_conversation(self):
        first, second = "- bullet", "- fix the test\n- and the docs"
        self.api.on_prompt(first, "printf one > /workspace/one.txt && echo wrote-one")
        self.api.on_prompt(second, "printf two > /workspace/two.txt && echo wrote-two")
        requests, slug = self.run_agent(self.cli.start, "flow", first)
        self.assertEqual((self.cli.workspace(slug) / "one.txt").read_text(), "one")
        self.assertEqual((self.cli.workspace(slug) / "README").read_text(), "hello\n")
        self.assertEqual(user_texts(requests[0]), [first])
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
        self.assertEqual(user_texts(resumed), [first, second])
        self.assertIn({"command": "printf one > /workspace/one.txt && echo wrote-one"},
                      tool_calls(resumed))
        self.assertTrue(any("wrote-one" in r for r in tool_results(resumed)))

    def test_prompts_that_look_like_options_or_files_arrive_verbatim(self):
        for name, prompt in NASTY_PROMPTS.items():
            with self.subTest(name):
                requests, _ = self.run_agent(self.cli.start, f"nasty-{name}", prompt,
                                             via_file=(name == "big"))
                self.assertEqual(user_texts(requests[0]), [prompt])


if __name__ == "__main__":
    unittest.main()
