"""The cases every real CLI speaking Anthropic's Messages API (claude, pi) must pass, in a
real bwrap bottle through `bot-bottle start/commit/resume` against the fake, streamed API:
the model's shell tool call changes the workspace, a resume carries the earlier
conversation, the manifest's model, key and skill reach the API, and prompts that look like
options or files arrive verbatim. A test module mixes `AnthropicCliCases` into a TestCase
and names its `PROVIDER`, the CLI's shell `TOOL`, and whether the prompt must be the only
user text (`EXACT`; claude adds blocks of its own, e.g. an `@path` file's content)."""

from __future__ import annotations

import json

from tests.support.fake_anthropic import FakeAnthropic, tool_calls, tool_results, user_texts
from tests.integration._real_cli import NASTY_PROMPTS, CliHome, require_clis

MODEL = "claude-sonnet-4-5"
SKILL_DESCRIPTION = "Zanzibar-marker skill for fixing flaky tests."
SKILL = f"---\nname: fixit\ndescription: {SKILL_DESCRIPTION}\n---\n\nRerun the test twice.\n"


class AnthropicCliCases:
    PROVIDER: str
    TOOL: str
    EXACT: bool

    @classmethod
    def setUpClass(cls):
        require_clis(cls.PROVIDER)
        cls.key = f"sk-ant-test-{cls.PROVIDER}-key"
        cls.api = FakeAnthropic(cls.TOOL).start()
        cls.addClassCleanup(cls.api.stop)
        cls.cli = CliHome(cls.addClassCleanup, cls.PROVIDER, model=MODEL, skills={"fixit": SKILL},
                          env={"ANTHROPIC_BASE_URL": cls.api.url, "ANTHROPIC_API_KEY": cls.key})

    def run_agent(self, action, *args, **kw):
        """Run a bot-bottle command; the agent requests it caused, and its result."""
        before = len(self.api.agent_requests())
        result = action(*args, **kw)
        requests = self.api.agent_requests()[before:]
        self.assertTrue(requests, f"{self.PROVIDER} sent no messages request offering its "
                                  f"{self.TOOL} tool")
        return requests, result

    def assert_user_texts(self, request, expected: list[str]) -> None:
        texts = user_texts(request)
        if self.EXACT:
            self.assertEqual(texts, expected)
        else:   # each prompt is its own, verbatim text, in order
            self.assertEqual([t for t in texts if t in expected], expected)

    def test_a_tool_call_changes_the_workspace_and_a_resume_continues_the_conversation(self):
        first, second = "- bullet", "- fix the test\n- and the docs"
        self.api.on_prompt(first, "printf one > /workspace/one.txt && echo wrote-one")
        self.api.on_prompt(second, "printf two > /workspace/two.txt && echo wrote-two")
        requests, slug = self.run_agent(self.cli.start, "flow", first)
        self.assertEqual((self.cli.workspace(slug) / "one.txt").read_text(), "one")
        self.assertEqual((self.cli.workspace(slug) / "README").read_text(), "hello\n")
        self.assert_user_texts(requests[0], [first])
        self.assertEqual(requests[0]["model"], MODEL)
        self.assertIn(SKILL_DESCRIPTION, json.dumps(requests[0]), "the skill is listed")
        self.assertTrue(any("wrote-one" in r for r in tool_results(requests[-1])))
        keys = {r.headers.get("x-api-key") for r in self.api.requests if r.method == "POST"}
        self.assertEqual(keys, {self.key})

        self.cli.commit(slug)
        requests, _ = self.run_agent(self.cli.resume, slug, second)
        self.assertEqual((self.cli.workspace(slug) / "two.txt").read_text(), "two")
        self.assertEqual((self.cli.workspace(slug) / "one.txt").read_text(), "one")
        resumed = requests[0]
        self.assert_user_texts(resumed, [first, second])
        self.assertEqual(user_texts(resumed)[-1], second)
        self.assertIn({"command": "printf one > /workspace/one.txt && echo wrote-one"},
                      tool_calls(resumed))
        self.assertTrue(any("wrote-one" in r for r in tool_results(resumed)))

    def test_prompts_that_look_like_options_or_files_arrive_verbatim(self):
        for name, prompt in NASTY_PROMPTS.items():
            with self.subTest(name):
                requests, _ = self.run_agent(self.cli.start, f"nasty-{name}", prompt,
                                             via_file=(name == "big"))
                self.assert_user_texts(requests[0], [prompt])
