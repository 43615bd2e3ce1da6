"""The claude provider: argv on start and resume, the fixed bottle variables, skills in the home."""

import tempfile
import unittest
from pathlib import Path

from bot_bottle.manifest import Agent
from bot_bottle.providers import claude

BASE = ["claude", "-p", "--permission-mode", "bypassPermissions"]


def agent(**kw):
    return Agent(name="a", provider="claude", bottles=("b",), **kw)


class ClaudeArgvTest(unittest.TestCase):
    CASES = [  # model, start argv, resume argv
        (None, BASE, BASE + ["--continue"]),
        ("claude-sonnet-4-5", BASE + ["--model", "claude-sonnet-4-5"],
         BASE + ["--model", "claude-sonnet-4-5", "--continue"]),
        ("-x", BASE + ["--model", "-x"], BASE + ["--model", "-x", "--continue"]),
    ]

    def test_start_and_resume_allow_edits_and_take_the_model_from_the_manifest(self):
        for model, start, resume in self.CASES:
            with self.subTest(model=model):
                self.assertEqual(claude.start(agent(model=model)), start)
                self.assertEqual(claude.resume(agent(model=model)), resume)

    def test_the_prompt_is_never_on_the_argv_it_comes_on_stdin(self):
        for argv in (claude.start(agent()), claude.resume(agent())):
            self.assertNotIn("--", argv)
            self.assertEqual(argv[0], claude.BINARY)

    def test_declares_its_binary_api_host_and_base_url_variable(self):
        self.assertEqual((claude.BINARY, claude.HOSTS, claude.BASE_URL_ENV),
                         ("claude", ("api.anthropic.com",), "ANTHROPIC_BASE_URL"))

    def test_env_marks_the_sandbox_and_turns_off_nonessential_traffic(self):
        env = claude.env(agent())
        self.assertEqual(env["IS_SANDBOX"], "1")
        for name in ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_AUTOUPDATER",
                     "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING"):
            with self.subTest(name):
                self.assertEqual(env[name], "1")
        env["IS_SANDBOX"] = "changed"
        self.assertEqual(claude.env(agent())["IS_SANDBOX"], "1", "a fresh dict each call")


class ClaudeHomeTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.home = self.root / "home"
        self.home.mkdir()

    def skill(self, name, text):
        folder = self.root / "skills" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SKILL.md").write_text(text)
        return folder

    def test_skills_are_copied_where_claude_reads_personal_skills(self):
        skills = {"review": self.skill("review", "v1"), "tests": self.skill("tests", "t")}
        claude.prepare_home(agent(skills=("review", "tests")), self.home, {}, skills)
        self.assertEqual((self.home / ".claude/skills/review/SKILL.md").read_text(), "v1")
        self.assertEqual((self.home / ".claude/skills/tests/SKILL.md").read_text(), "t")

    def test_a_resume_replaces_the_copy_with_the_current_skill(self):
        skills = {"review": self.skill("review", "v1")}
        claude.prepare_home(agent(skills=("review",)), self.home, {}, skills)
        (self.home / ".claude/skills/review/stale.md").write_text("old")
        self.skill("review", "v2")
        claude.prepare_home(agent(skills=("review",)), self.home, {}, skills)
        self.assertEqual((self.home / ".claude/skills/review/SKILL.md").read_text(), "v2")
        self.assertFalse((self.home / ".claude/skills/review/stale.md").exists())

    def test_without_skills_the_home_is_left_alone(self):
        claude.prepare_home(agent(), self.home, {"ANTHROPIC_BASE_URL": "http://x"}, {})
        self.assertEqual(list(self.home.iterdir()), [])


if __name__ == "__main__":
    unittest.main()
