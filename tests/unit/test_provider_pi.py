"""The pi provider: argv on start and resume, the fixed bottle variables, the base URL in
models.json and skills named with --skill."""

import json
import tempfile
import unittest
from pathlib import Path, PurePosixPath

from bot_bottle.backend.base import IN_HOME
from bot_bottle.manifest import Agent
from bot_bottle.providers import pi

BASE = ["pi", "-p", "--provider", "anthropic"]
SKILL = IN_HOME + "/.bot-bottle/skills/"


def agent(**kw):
    return Agent(name="a", provider="pi", bottles=("b",), **kw)


class PiArgvTest(unittest.TestCase):
    CASES = [  # model, skills, start argv (resume appends --continue)
        (None, (), BASE),
        ("claude-sonnet-4-5", (), BASE + ["--model", "claude-sonnet-4-5"]),
        (None, ("review",), BASE + ["--skill", SKILL + "review"]),
        ("m", ("review", "tests"),
         BASE + ["--model", "m", "--skill", SKILL + "review", "--skill", SKILL + "tests"]),
    ]

    def test_start_and_resume_name_provider_model_and_skills(self):
        for model, skills, start in self.CASES:
            with self.subTest(model=model, skills=skills):
                a = agent(model=model, skills=skills)
                self.assertEqual(pi.start(a), start)
                self.assertEqual(pi.resume(a), start + ["--continue"])

    def test_the_prompt_is_never_on_the_argv_it_comes_on_stdin(self):
        for argv in (pi.start(agent()), pi.resume(agent())):
            self.assertNotIn("--", argv)
            self.assertFalse([a for a in argv if a.startswith("@")])
            self.assertEqual(argv[0], pi.BINARY)

    def test_declares_its_binary_api_host_and_base_url_variable(self):
        self.assertEqual((pi.BINARY, pi.HOSTS, pi.BASE_URL_ENV),
                         ("pi", ("api.anthropic.com",), "ANTHROPIC_BASE_URL"))

    def test_env_turns_off_startup_network_operations(self):
        self.assertEqual(pi.env(agent()), {"PI_OFFLINE": "1", "PI_SKIP_VERSION_CHECK": "1",
                                           "PI_TELEMETRY": "0"})


class PiHomeTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.home = self.root / "home"
        self.home.mkdir()
        self.models = self.home / ".pi/agent/models.json"

    def prepare(self, env, skills=None, a=None):
        pi.prepare_home(a or agent(), self.home, env, skills or {})

    def test_base_url_in_models_json_follows_the_bottle_env(self):
        cases = [  # existing models.json, bottle env, expected models.json (None: no file)
            (None, {}, None),
            (None, {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"},
             {"providers": {"anthropic": {"baseUrl": "http://127.0.0.1:9"}}}),
            ({"providers": {"anthropic": {"baseUrl": "http://old"}, "x": {"api": "y"}}},
             {"ANTHROPIC_BASE_URL": "http://new"},
             {"providers": {"anthropic": {"baseUrl": "http://new"}, "x": {"api": "y"}}}),
            ({"providers": {"anthropic": {"baseUrl": "http://old"}}}, {}, {"providers": {}}),
            ({"providers": {"anthropic": {"baseUrl": "http://old", "headers": {"h": "v"}}}},
             {}, {"providers": {"anthropic": {"headers": {"h": "v"}}}}),
            ("not json", {"ANTHROPIC_BASE_URL": "http://u"},
             {"providers": {"anthropic": {"baseUrl": "http://u"}}}),
            (["a list"], {"ANTHROPIC_BASE_URL": "http://u"},
             {"providers": {"anthropic": {"baseUrl": "http://u"}}}),
        ]
        for existing, env, expected in cases:
            with self.subTest(existing=existing, env=env):
                if self.models.exists():
                    self.models.unlink()
                if existing is not None:
                    self.models.parent.mkdir(parents=True, exist_ok=True)
                    self.models.write_text(existing if isinstance(existing, str)
                                           else json.dumps(existing))
                self.prepare(env)
                if expected is None:
                    self.assertFalse(self.models.exists())
                else:
                    self.assertEqual(json.loads(self.models.read_text()), expected)

    def test_each_skill_on_the_argv_is_a_folder_prepare_home_filled(self):
        skills = {}
        for name in ("review", "tests"):
            folder = self.root / "skills" / name
            folder.mkdir(parents=True)
            (folder / "SKILL.md").write_text(f"# {name}\n")
            skills[name] = folder
        a = agent(skills=("review", "tests"))
        self.prepare({}, skills, a)
        argv = pi.start(a)
        paths = [argv[i + 1] for i, x in enumerate(argv) if x == "--skill"]
        self.assertEqual(len(paths), 2)
        for p in paths:
            with self.subTest(p):
                host = self.home / PurePosixPath(p).relative_to(IN_HOME)
                self.assertEqual((host / "SKILL.md").read_text(), f"# {host.name}\n")
        self.assertFalse((self.home / ".pi/agent/skills").exists(),
                         "not where pi scans by itself: only the manifest's skills load")


if __name__ == "__main__":
    unittest.main()
