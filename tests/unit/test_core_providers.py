"""Each provider's start and resume argv, the registry, and the prompt/skills hand-over."""

import json
import io
import tempfile
import unittest
from pathlib import Path

from bot_bottle import api, manifest, providers
from bot_bottle.errors import ManifestError
from bot_bottle.manifest import Agent
from bot_bottle.providers import agent_argv, claude, codex, command, pi


def agent(provider, **kw):
    return Agent(name="a", provider=provider, bottles=("b",), **kw)


class ProviderArgvTest(unittest.TestCase):
    CASES = [  # provider, model, start argv, resume argv
        ("claude", None, ["claude", "-p", "P"], ["claude", "--continue", "-p", "P"]),
        ("claude", "sonnet", ["claude", "--model", "sonnet", "-p", "P"],
         ["claude", "--model", "sonnet", "--continue", "-p", "P"]),
        ("codex", None, ["codex", "exec", "P"], ["codex", "exec", "resume", "--last", "P"]),
        ("codex", "o4", ["codex", "exec", "-m", "o4", "P"],
         ["codex", "exec", "resume", "--last", "-m", "o4", "P"]),
        ("pi", None, ["pi", "-p", "P"], ["pi", "--continue", "-p", "P"]),
        ("pi", "m1", ["pi", "--model", "m1", "-p", "P"], ["pi", "--model", "m1", "--continue", "-p", "P"]),
    ]

    def test_start_and_resume_argv_of_each_provider(self):
        for provider, model, start, resume in self.CASES:
            with self.subTest(provider=provider, model=model):
                a = agent(provider, model=model)
                self.assertEqual(agent_argv(a, "P", resume=False), start)
                self.assertEqual(agent_argv(a, "P", resume=True), resume)
                module = providers.REGISTRY[provider]
                self.assertEqual(module.start(a, "P"), start)
                self.assertEqual(module.resume(a, "P"), resume)

    def test_prompt_is_one_argv_element_however_it_looks(self):
        nasty = "fix; rm -rf / $(id) 'quoted' \"dq\"\nsecond line"
        for provider, mod in (("claude", claude), ("codex", codex), ("pi", pi)):
            with self.subTest(provider=provider):
                for argv in (mod.start(agent(provider), nasty), mod.resume(agent(provider), nasty)):
                    self.assertEqual(argv[-1], nasty)
                    self.assertEqual(argv.count(nasty), 1)

    def test_command_provider_runs_its_argv_unchanged_and_keeps_the_prompt_off_it(self):
        a = agent("command", command=("python3", "/x/agent.py", "--exit-code", "3"), model="ignored")
        for resume in (False, True):
            with self.subTest(resume=resume):
                argv = agent_argv(a, "the prompt", resume=resume)
                self.assertEqual(argv, ["python3", "/x/agent.py", "--exit-code", "3"])
                self.assertNotIn("the prompt", argv)
        self.assertIsNot(command.start(a, "p"), command.start(a, "p"))  # a fresh list each time

    def test_registry_knows_exactly_the_manifest_providers(self):
        self.assertEqual(tuple(providers.REGISTRY), manifest.PROVIDERS)
        for name, module in providers.REGISTRY.items():
            with self.subTest(name):
                self.assertTrue(module.__doc__)
                self.assertTrue(callable(module.start) and callable(module.resume))

    def test_unknown_provider_is_a_manifest_error(self):
        with self.assertRaisesRegex(ManifestError, "unknown provider 'emacs'"):
            agent_argv(agent("emacs"), "P", resume=False)


class PromptHandOverTest(unittest.TestCase):
    """The prompt reaches every provider in a file and an env var; model and skills from the manifest."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        (self.home / "agents").mkdir()
        (self.home / "bottles").mkdir()
        (self.home / "bottles" / "b.toml").write_text(f'dir = "{self.home}"\n')

    def plan(self, agent_toml):
        (self.home / "agents" / "a.toml").write_text(agent_toml)
        out = io.StringIO()
        rc = api.start_headless(self.home, "a", "do it", environ={"PATH": "/nonexistent"}, dry_run=True, out=out)
        self.assertEqual(rc, 0)
        self.assertFalse((self.home / "state" / "a").exists())
        return json.loads(out.getvalue())

    def setenv(self, plan):
        self.assertNotIn("--setenv", plan["argv"], "values stay out of the world-readable argv")
        return plan["environment"]

    def test_command_provider_gets_prompt_in_a_file_and_an_env_var(self):
        plan = self.plan('provider = "command"\nbottles = ["b"]\ncommand = ["python3", "agent.py"]\n')
        env = self.setenv(plan)
        self.assertEqual(env["BOT_BOTTLE_PROMPT_FILE"], "/run/bot-bottle/prompt.txt")
        self.assertIn("BOT_BOTTLE_PROMPT", plan["env"])
        self.assertIn({"src": str(self.home / "state" / "a" / "prompt.txt"),
                       "dst": "/run/bot-bottle/prompt.txt", "mode": "ro"}, plan["mounts"])
        self.assertEqual(plan["argv"][plan["argv"].index("--") + 1:], ["python3", "agent.py"])

    def test_model_and_skills_from_the_manifest_reach_the_argv_and_env(self):
        plan = self.plan('provider = "claude"\nbottles = ["b"]\nmodel = "opus"\nskills = ["review", "tests"]\n')
        self.assertEqual(plan["argv"][plan["argv"].index("--") + 1:], ["claude", "--model", "opus", "-p", "do it"])
        self.assertEqual(self.setenv(plan)["BOT_BOTTLE_SKILLS"], "review,tests")


if __name__ == "__main__":
    unittest.main()
