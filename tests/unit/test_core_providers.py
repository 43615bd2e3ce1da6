"""The provider registry and contract, the command provider, and the hand-over every provider
shares: the prompt on stdin and in a file (never on the argv), the fixed bottle variables, the
skills found in $BOT_BOTTLE_HOME/skills and given to `prepare_home` on start and resume.

Note: the claude, codex and pi argv rows that used to live here are tested by their own
modules (tests/unit/test_provider_claude.py, test_provider_codex.py, test_provider_pi.py).
"""

import io
import json
import os
import stat
import tempfile
import unittest
from pathlib import Path

from bot_bottle import api, manifest, providers
from bot_bottle.errors import ManifestError
from bot_bottle.manifest import Agent
from bot_bottle.providers import agent_argv, command


def agent(provider, **kw):
    return Agent(name="a", provider=provider, bottles=("b",), **kw)


class RegistryTest(unittest.TestCase):
    def test_registry_knows_exactly_the_manifest_providers(self):
        self.assertEqual(tuple(providers.REGISTRY), manifest.PROVIDERS)

    def test_every_provider_fills_the_whole_contract(self):
        for name, module in providers.REGISTRY.items():
            with self.subTest(name):
                self.assertTrue(module.__doc__)
                for attr in ("start", "resume", "env", "prepare_home"):
                    self.assertTrue(callable(getattr(module, attr)), attr)
                self.assertIsInstance(module.HOSTS, tuple)
                self.assertTrue(module.BINARY is None or isinstance(module.BINARY, str))
                a = agent(name, command=("python3",))
                for argv in (agent_argv(a, resume=False), agent_argv(a, resume=True)):
                    self.assertTrue(argv and all(isinstance(x, str) for x in argv))
                    if module.BINARY:
                        self.assertEqual(argv[0], module.BINARY)
                self.assertIsInstance(module.env(a), dict)

    def test_unknown_provider_is_a_manifest_error(self):
        with self.assertRaisesRegex(ManifestError, "unknown provider 'emacs'"):
            agent_argv(agent("emacs"), resume=False)


class CommandProviderTest(unittest.TestCase):
    def test_command_provider_runs_its_argv_unchanged_on_start_and_resume(self):
        a = agent("command", command=("python3", "/x/agent.py", "--exit-code", "3"), model="ignored")
        for resume in (False, True):
            with self.subTest(resume=resume):
                self.assertEqual(agent_argv(a, resume=resume), ["python3", "/x/agent.py", "--exit-code", "3"])
        self.assertIsNot(command.start(a), command.start(a))  # a fresh list each time
        self.assertIsNone(command.BINARY)   # its binary is command[0]

    def test_command_provider_names_its_skills_and_copies_them_into_the_home(self):
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "src" / "review"
            src.mkdir(parents=True)
            (src / "SKILL.md").write_text("# review\n")
            a = agent("command", command=("x",), skills=("review",))
            self.assertEqual(command.env(a), {"BOT_BOTTLE_SKILLS": "review"})
            self.assertEqual(command.env(agent("command", command=("x",))), {})
            home = Path(d) / "home"
            command.prepare_home(a, home, {}, {"review": src})
            (src / "SKILL.md").write_text("# review v2\n")
            command.prepare_home(a, home, {}, {"review": src})  # again on resume: replaced
            self.assertEqual((home / "skills" / "review" / "SKILL.md").read_text(), "# review v2\n")


FAKE_BWRAP = """#!/usr/bin/env python3
import os, sys
ws = next(sys.argv[i + 1] for i in range(len(sys.argv) - 2) if sys.argv[i] == "--bind" and sys.argv[i + 2] == "/workspace")
with open(os.path.join(ws, "STDIN"), "wb") as fh:
    fh.write(sys.stdin.buffer.read())
"""


class HandOverTest(unittest.TestCase):
    """What `api` hands every provider: prompt on stdin and in a file, env, skills."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        for d in ("agents", "bottles", "bin"):
            (self.home / d).mkdir()
        (self.home / "bottles" / "b.toml").write_text("")
        (self.home / "bin" / "bwrap").write_text(FAKE_BWRAP)
        os.chmod(self.home / "bin" / "bwrap", stat.S_IRWXU)
        self.environ = {"PATH": f"{self.home / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def plan(self, agent_toml, **environ):
        (self.home / "agents" / "a.toml").write_text(agent_toml)
        out = io.StringIO()
        rc = api.start_headless(self.home, "a", "do it", environ={"PATH": "/nonexistent", **environ},
                                dry_run=True, out=out)
        self.assertEqual(rc, 0)
        self.assertFalse((self.home / "state" / "a").exists())
        return json.loads(out.getvalue())

    def test_the_prompt_is_the_sandboxs_stdin_and_a_read_only_file_never_an_env_var(self):
        plan = self.plan('provider = "command"\nbottles = ["b"]\ncommand = ["python3", "agent.py"]\n')
        self.assertNotIn("--setenv", plan["argv"], "values stay out of the world-readable argv")
        self.assertEqual(plan["environment"]["BOT_BOTTLE_PROMPT_FILE"], "/run/bot-bottle/prompt.txt")
        self.assertNotIn("BOT_BOTTLE_PROMPT", plan["env"])
        self.assertIn({"src": str(self.home / "state" / "a" / "prompt.txt"),
                       "dst": "/run/bot-bottle/prompt.txt", "mode": "ro"}, plan["mounts"])
        argv = plan["argv"]   # after the last `--` (as root: after the drop to the agent user)
        self.assertEqual(argv[len(argv) - argv[::-1].index("--"):], ["python3", "agent.py"])
        (self.home / "agents" / "a.toml").write_text('provider = "command"\nbottles = ["b"]\ncommand = ["true"]\n')
        prompt = "--help\n- a bullet\n@/etc/passwd é ✓".encode() * 10000
        self.assertEqual(api.start_headless(self.home, "a", prompt, environ=self.environ), 0)
        self.assertEqual((self.home / "state" / "a" / "bottle" / "workspace" / "STDIN").read_bytes(), prompt)
        self.assertEqual((self.home / "state" / "a" / "prompt.txt").read_bytes(), prompt)
        self.assertEqual(stat.S_IMODE((self.home / "state" / "a" / "prompt.txt").stat().st_mode), 0o600)

    def test_dry_run_shows_safe_and_provider_values_and_redacts_the_rest(self):
        (self.home / "bottles" / "b.toml").write_text('env = ["API_KEY"]\n')
        plan = self.plan('provider = "command"\nbottles = ["b"]\ncommand = ["true"]\nskills = []\n'
                         'env = { MODE = "fast" }\n', API_KEY="sk-secret-123456")
        env = plan["environment"]
        self.assertEqual((env["API_KEY"], env["MODE"]), ("<redacted>", "<redacted>"))
        self.assertEqual(env["PATH"], "/usr/local/bin:/usr/bin:/bin")
        self.assertNotIn("sk-secret-123456", json.dumps(plan))

    def test_skills_come_from_the_home_and_a_missing_one_is_named_with_exit_2(self):
        toml = 'provider = "command"\nbottles = ["b"]\ncommand = ["true"]\nskills = ["review", "tests"]\n'
        (self.home / "skills" / "review").mkdir(parents=True)
        (self.home / "skills" / "review" / "SKILL.md").write_text("# review\n")
        (self.home / "agents" / "a.toml").write_text(toml)
        with self.assertRaises(ManifestError) as cm:
            api.start_headless(self.home, "a", "p", environ=self.environ)
        self.assertEqual(cm.exception.exit_code, 2)
        self.assertIn(f"skill 'tests' not found (expected {self.home / 'skills' / 'tests'}/SKILL.md)",
                      str(cm.exception))
        self.assertFalse((self.home / "state").exists() and list((self.home / "state").glob("*/")))
        (self.home / "skills" / "tests").mkdir()
        (self.home / "skills" / "tests" / "SKILL.md").write_text("# tests\n")
        self.assertEqual(self.plan(toml)["environment"]["BOT_BOTTLE_SKILLS"], "review,tests")
        self.assertEqual(api.start_headless(self.home, "a", "p", environ=self.environ), 0)
        home = self.home / "state" / "a" / "bottle" / "home"
        self.assertEqual((home / "skills" / "tests" / "SKILL.md").read_text(), "# tests\n")
        api.freeze(self.home, "a", environ=self.environ)
        (self.home / "skills" / "tests" / "SKILL.md").write_text("# tests v2\n")
        api.resume_headless(self.home, "a", "p", environ=self.environ)   # prepare_home again
        self.assertEqual((home / "skills" / "tests" / "SKILL.md").read_text(), "# tests v2\n")

    def test_a_bad_skill_name_is_refused_in_the_manifest(self):
        (self.home / "agents" / "a.toml").write_text(
            'provider = "command"\nbottles = ["b"]\ncommand = ["true"]\nskills = ["../etc"]\n')
        with self.assertRaisesRegex(ManifestError, r"a\.toml: key 'skills' has invalid name '\.\./etc'"):
            api.start_headless(self.home, "a", "p", environ=self.environ)


if __name__ == "__main__":
    unittest.main()
