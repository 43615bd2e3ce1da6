"""The codex provider (argv, env, the config.toml and skills it writes) and the fake OpenAI
Responses API the real-CLI test runs it against (the tool-call shapes, the streamed events)."""

import json
import tempfile
import tomllib
import unittest
import urllib.error
import urllib.request
from pathlib import Path

from bot_bottle.manifest import Agent
from bot_bottle.providers import codex, get_provider
from tests.support import fake_openai
from tests.support.fake_openai import FakeOpenAI

EXEC = ["codex", "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]


def agent(**kw):
    return Agent(name="a", provider="codex", bottles=("b",), **kw)


class CodexArgvTest(unittest.TestCase):
    CASES = [  # model, start argv, resume argv
        (None, [*EXEC, "-"], [*EXEC, "resume", "--last", "-"]),
        ("gpt-5-codex", [*EXEC, "-m", "gpt-5-codex", "-"],
         [*EXEC, "-m", "gpt-5-codex", "resume", "--last", "-"]),
    ]

    def test_start_and_resume_argv_with_and_without_a_model(self):
        for model, start, resume in self.CASES:
            with self.subTest(model=model):
                self.assertEqual(codex.start(agent(model=model)), start)
                self.assertEqual(codex.resume(agent(model=model)), resume)

    def test_the_prompt_is_read_from_stdin_never_from_argv(self):
        for argv in (codex.start(agent()), codex.resume(agent())):
            with self.subTest(argv=argv):
                self.assertEqual(argv[-1], "-")   # codex: `-` = the prompt is standard input
                self.assertNotIn("--", argv)

    def test_resume_keeps_the_sandbox_bypass_before_the_subcommand(self):
        argv = codex.resume(agent(model="m"))
        self.assertLess(argv.index("--dangerously-bypass-approvals-and-sandbox"), argv.index("resume"))
        self.assertNotIn("-s", argv)   # `exec resume` has no -s; read-only would be its default

    def test_registry_entry_and_what_the_core_and_egress_gate_read(self):
        self.assertIs(get_provider("codex"), codex)
        self.assertEqual(codex.BINARY, codex.start(agent())[0])
        self.assertEqual(codex.HOSTS, ("api.openai.com",))
        self.assertEqual(codex.BASE_URL_ENV, "OPENAI_BASE_URL")

    def test_codex_home_is_inside_the_bottle_home(self):
        self.assertEqual(codex.env(agent()), {"CODEX_HOME": "/home/agent/.codex"})


class CodexHomeTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.home = self.root / "home"

    def config(self, bottle_env, skills=None):
        codex.prepare_home(agent(), self.home, bottle_env, skills or {})
        text = (self.home / ".codex" / "config.toml").read_text(encoding="utf-8")
        return text, tomllib.loads(text)

    def test_config_points_codex_at_the_bottles_base_url_or_the_real_api(self):
        cases = [  # bottle env, expected base_url
            ({}, "https://api.openai.com/v1"),
            ({"OPENAI_BASE_URL": ""}, "https://api.openai.com/v1"),
            ({"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}, "http://127.0.0.1:8080/v1"),
            ({"OPENAI_BASE_URL": 'http://h/"q"\\x\n\x7f#ü'}, 'http://h/"q"\\x\n\x7f#ü'),
        ]
        for env, base_url in cases:
            with self.subTest(env=env):
                _, cfg = self.config(env)
                self.assertEqual(cfg["model_provider"], "bot-bottle")
                self.assertEqual(cfg["model_providers"]["bot-bottle"], {
                    "name": "bot-bottle", "base_url": base_url, "env_key": "OPENAI_API_KEY",
                    "wire_api": "responses",
                    "env_http_headers": {"OpenAI-Organization": "OPENAI_ORGANIZATION",
                                         "OpenAI-Project": "OPENAI_PROJECT"}})

    def test_config_turns_off_everything_that_phones_home(self):
        _, cfg = self.config({})
        self.assertIs(cfg["check_for_update_on_startup"], False)
        self.assertEqual(cfg["analytics"], {"enabled": False})
        self.assertEqual(cfg["feedback"], {"enabled": False})
        self.assertEqual(cfg["otel"], {"exporter": "none", "trace_exporter": "none",
                                       "metrics_exporter": "none"})
        self.assertEqual(cfg["features"], {"plugins": False, "apps": False})

    def test_config_names_the_api_key_variable_but_never_holds_a_secret(self):
        text, _ = self.config({"OPENAI_API_KEY": "sk-very-secret", "OPENAI_BASE_URL": "http://x/v1"})
        self.assertNotIn("sk-very-secret", text)

    def test_config_is_rewritten_on_every_run_and_codex_state_is_kept(self):
        self.config({"OPENAI_BASE_URL": "http://old/v1"})
        session = self.home / ".codex" / "sessions" / "s.jsonl"
        session.parent.mkdir(parents=True)
        session.write_text("{}\n")
        _, cfg = self.config({"OPENAI_BASE_URL": "http://new/v1"})
        self.assertEqual(cfg["model_providers"]["bot-bottle"]["base_url"], "http://new/v1")
        self.assertEqual(session.read_text(), "{}\n")

    def test_skills_are_copied_where_codex_lists_them_and_replaced_on_resume(self):
        src = self.root / "skills" / "review"
        src.mkdir(parents=True)
        (src / "SKILL.md").write_text("---\nname: review\ndescription: v1\n---\n")
        self.config({}, {"review": src})
        installed = self.home / ".codex" / "skills" / "review" / "SKILL.md"
        self.assertIn("v1", installed.read_text())
        (src / "SKILL.md").write_text("---\nname: review\ndescription: v2\n---\n")
        self.config({}, {"review": src})
        self.assertIn("v2", installed.read_text())


class FakeOpenAIToolCallTest(unittest.TestCase):
    """The fake calls whichever shell tool a request offers, shaped as that tool takes it."""

    def test_each_offered_shell_tool_gets_its_own_argument_shape(self):
        code_mode = {"type": "additional_tools", "tools": [
            {"type": "namespace", "name": "functions", "tools": [
                {"type": "custom", "name": "exec"}, {"type": "function", "name": "wait"}]}]}
        cases = [  # request, expected (type, name, payload key, payload check)
            ({"input": [code_mode]}, ("custom_tool_call", "exec", "input",
                                      'tools.exec_command({cmd: "touch /workspace/x"})')),
            ({"tools": [{"type": "function", "name": "exec_command"}]},
             ("function_call", "exec_command", "arguments", '{"cmd": "touch /workspace/x"}')),
            ({"tools": [{"type": "function", "name": "shell_command"}]},
             ("function_call", "shell_command", "arguments", '{"command": "touch /workspace/x"}')),
            ({"tools": [{"type": "function", "name": "shell"}]},
             ("function_call", "shell", "arguments",
              '{"command": ["bash", "-lc", "touch /workspace/x"]}')),
        ]
        for body, (kind, name, key, expected) in cases:
            with self.subTest(name=name):
                item = fake_openai.shell_call(fake_openai.offered_tools(body), "touch /workspace/x")
                self.assertEqual((item["type"], item["name"]), (kind, name))
                self.assertIn(expected, item[key])
                self.assertTrue(item["call_id"].startswith("call_"))

    def test_a_request_without_a_shell_tool_cannot_be_scripted(self):
        with self.assertRaisesRegex(LookupError, "no shell tool offered"):
            fake_openai.shell_call([{"type": "function", "name": "view_image"}], "true")


class FakeOpenAIServerTest(unittest.TestCase):
    """Over real HTTP: the streamed event sequence, the script, the record, other endpoints."""

    def setUp(self):
        self.fake = FakeOpenAI().start()
        self.addCleanup(self.fake.stop)

    def post(self, body):
        req = urllib.request.Request(self.fake.base_url + "/responses", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            self.assertEqual(resp.headers["Content-Type"].split(";")[0], "text/event-stream")
            raw = resp.read().decode()
        events = []
        for block in raw.split("\n\n"):
            if block.strip():
                name, data = block.split("\n")
                event = json.loads(data.removeprefix("data: "))
                self.assertEqual(name, "event: " + event["type"])
                events.append(event)
        return events

    def test_a_new_prompt_gets_the_queued_tool_call_then_its_output_gets_the_final_text(self):
        self.fake.queue("echo hi > /workspace/f")
        prompt = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "- a"}]}
        tools = [{"type": "function", "name": "exec_command"}]
        first = self.post({"model": "m", "stream": True, "tools": tools, "input": [prompt]})
        self.assertEqual([e["type"] for e in first], [
            "response.created", "response.in_progress", "response.output_item.added",
            "response.function_call_arguments.delta", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done",
            "response.completed"])
        call = first[-2]["item"]
        self.assertEqual(json.loads(call["arguments"]), {"cmd": "echo hi > /workspace/f"})
        self.assertEqual(first[-1]["response"]["usage"]["total_tokens"], 15)
        self.assertEqual([e["sequence_number"] for e in first], list(range(len(first))))

        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}
        second = self.post({"model": "m", "stream": True, "tools": tools,
                            "input": [prompt, call, output]})
        self.assertEqual("".join(e["delta"] for e in second
                                 if e["type"] == "response.output_text.delta"), fake_openai.FINAL_TEXT)
        self.assertEqual(second[-1]["response"]["output"][0]["content"][0]["text"],
                         fake_openai.FINAL_TEXT)
        bodies = self.fake.agent_requests()
        self.assertEqual([fake_openai.user_texts(b) for b in bodies], [["- a"], ["- a"]])
        self.assertEqual(fake_openai.tool_outputs(bodies[1]), ["ok"])

    def test_a_prompt_with_nothing_queued_gets_the_final_text(self):
        events = self.post({"model": "m", "stream": True, "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]})
        self.assertEqual(events[-1]["response"]["output"][0]["type"], "message")

    def test_models_list_in_the_apis_shape_and_unknown_paths_are_404s(self):
        with urllib.request.urlopen(self.fake.base_url + "/models", timeout=10) as resp:
            listing = json.load(resp)
        self.assertEqual(listing["object"], "list")
        self.assertIn("gpt-5-codex", [m["id"] for m in listing["data"]])
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(self.fake.base_url + "/nowhere", timeout=10)
        self.assertEqual(ctx.exception.code, 404)
        self.assertIn("error", json.load(ctx.exception))
        ctx.exception.close()


if __name__ == "__main__":
    unittest.main()
