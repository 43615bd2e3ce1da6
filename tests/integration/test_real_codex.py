"""The real Codex CLI (@openai/codex, pinned by .ci/setup) in real bwrap bottles, driven through
`bot-bottle start/commit/resume` against a fake OpenAI Responses API on 127.0.0.1 that streams
like the real one: the model's shell call changes the workspace, on start and after resume
(codex is read-only by default), prompts arrive verbatim, resume carries the conversation."""

import unittest

from tests.support.fake_openai import FINAL_TEXT, FakeOpenAI, tool_outputs, user_texts
from tests.integration._real_cli import BIG_PROMPT, NASTY_PROMPTS, CliHome, require_clis

API_KEY = "sk-test-codex-0123456789"
SKILL = "---\nname: house-rules\ndescription: How this repository wants changes made.\n---\nBe kind.\n"
# every short nasty prompt in one, starting like a Markdown bullet list
FIRST_PROMPT = "\n".join([NASTY_PROMPTS["bullet"]] + [p for k, p in NASTY_PROMPTS.items()
                                                     if k not in ("bullet", "big")])
RESUME_PROMPT = "- also write a second file\n- and keep the first"
CALLS = ("custom_tool_call", "function_call")


def _text(item):
    return "".join(p.get("text", "") for p in item.get("content") or [] if isinstance(p, dict))


def _header(request, name):
    return next((v for k, v in request.headers.items() if k.lower() == name), None)


class RealCodexTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_clis("codex")

    def setUp(self):
        self.fake = FakeOpenAI().start()
        self.addCleanup(self.fake.stop)

    def make_home(self, **kw):
        return CliHome(self.addCleanup, "codex", **kw, env={
            "OPENAI_BASE_URL": self.fake.base_url, "OPENAI_API_KEY": API_KEY})

    def test_codex_changes_the_workspace_and_resume_continues_the_same_conversation(self):
        home = self.make_home(skills={"house-rules": SKILL})
        self.fake.queue("printf 'first\\n' > /workspace/from-codex-1.txt")
        slug = home.start("work", FIRST_PROMPT)

        self.assertEqual((home.workspace(slug) / "from-codex-1.txt").read_text(), "first\n")
        first = self.fake.agent_requests()
        self.assertEqual(len(first), 2, "one request for the tool call, one after its output")
        self.assertEqual(user_texts(first[0])[-1], FIRST_PROMPT)
        posts = [r for r in self.fake.requests if r.method == "POST"]
        self.assertEqual({_header(r, "authorization") for r in posts}, {f"Bearer {API_KEY}"})
        developer = " ".join(_text(i) for i in first[0]["input"] if i.get("role") == "developer")
        self.assertIn("house-rules: How this repository wants changes made.", developer)
        self.assertIn("/home/agent/.codex/skills", developer)
        bottle_home = home.workspace(slug).parent / "home"
        for path in bottle_home.rglob("*"):
            if path.is_file():
                self.assertNotIn(API_KEY.encode(), path.read_bytes(), f"the API key is in {path}")

        home.commit(slug)
        self.fake.queue("printf 'second\\n' > /workspace/from-codex-2.txt")
        home.resume(slug, RESUME_PROMPT)

        self.assertEqual((home.workspace(slug) / "from-codex-2.txt").read_text(), "second\n")
        self.assertEqual((home.workspace(slug) / "from-codex-1.txt").read_text(), "first\n")
        requests = self.fake.agent_requests()
        self.assertEqual(len(requests), 4)
        items = requests[2]["input"]
        call = next(i for i in first[1]["input"] if i.get("type") in CALLS)

        def where(pred):
            return next(n for n, i in enumerate(items) if pred(i))
        order = [
            where(lambda i: i.get("role") == "user" and _text(i) == FIRST_PROMPT),
            where(lambda i: i.get("type") in CALLS and i.get("call_id") == call["call_id"]),
            where(lambda i: i.get("type", "").endswith("_output")
                  and i.get("call_id") == call["call_id"]),
            where(lambda i: i.get("role") == "assistant" and _text(i) == FINAL_TEXT),
            where(lambda i: i.get("role") == "user" and _text(i) == RESUME_PROMPT),
        ]
        self.assertEqual(order, sorted(order), "the earlier conversation, then the new prompt")
        self.assertEqual(user_texts(requests[2])[-1], RESUME_PROMPT)
        self.assertEqual(len(tool_outputs(requests[3])), 2)

    def test_a_128_kib_prompt_file_arrives_verbatim_and_the_manifests_model_is_used(self):
        home = self.make_home(model="gpt-5-codex")
        self.fake.queue("printf 'big\\n' > /workspace/big.txt")
        slug = home.start("big", BIG_PROMPT, via_file=True)

        self.assertEqual((home.workspace(slug) / "big.txt").read_text(), "big\n")
        first = self.fake.agent_requests()[0]
        self.assertEqual(user_texts(first)[-1], BIG_PROMPT)
        self.assertEqual(first["model"], "gpt-5-codex")


if __name__ == "__main__":
    unittest.main()
