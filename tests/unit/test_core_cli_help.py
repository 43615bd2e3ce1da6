"""Every CLI subcommand and flag carries help text (fails when one is added without it)."""

import argparse
import contextlib
import io
import os
import subprocess
import sys
import unittest
from pathlib import Path

from bot_bottle.cli import build_parser, main

REPO_ROOT = Path(__file__).resolve().parents[2]


def _help_of(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*argv, "--help"])
    return rc, " ".join(out.getvalue().split())


def _sub(parser):
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]


class HelpTest(unittest.TestCase):
    def test_every_subcommand_and_flag_has_help(self):
        parser = build_parser()
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
        self.assertEqual(set(subs.choices), {"start", "commit", "resume", "destroy", "list", "logs"})
        helped = {c.dest: c.help for c in subs._choices_actions}
        for name, sub in subs.choices.items():
            with self.subTest(cmd=name):
                self.assertTrue(helped.get(name), f"subcommand {name} has no help")
                for action in sub._actions:
                    if isinstance(action, argparse._HelpAction):
                        continue
                    self.assertTrue(action.help, f"{name} {action.option_strings or action.dest} has no help")


    def test_each_subcommand_help_output_shows_every_flag_with_its_text(self):
        subs = _sub(build_parser())
        for name, sub in subs.choices.items():
            rc, text = _help_of(name)
            with self.subTest(cmd=name):
                self.assertEqual(rc, 0)
                self.assertIn(f"usage: bot-bottle {name}", text)
                self.assertIn(" ".join(sub.description.split()), text)
                for action in sub._actions:
                    for opt in action.option_strings or [action.dest]:
                        self.assertIn(opt, text)
                    self.assertIn(" ".join(action.help.split()), text)

    def test_top_level_help_lists_every_subcommand_exit_codes_and_home(self):
        rc, text = _help_of()
        self.assertEqual(rc, 0)
        for action in _sub(build_parser())._choices_actions:
            with self.subTest(cmd=action.dest):
                self.assertIn(f"{action.dest} {' '.join(action.help.split())}", text)
        for needle in ("BOT_BOTTLE_HOME", "BOT_BOTTLE_LOG_MAX_BYTES", "2 usage", "3 state conflict",
                       "4 backend", "124 start/resume: the agent ran past its time limit", "128+N"):
            self.assertIn(needle, text)

    def test_help_via_python_m_exits_0_on_stdout(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT)}
        for argv in ([], ["start"], ["commit"], ["resume"], ["destroy"], ["list"], ["logs"]):
            with self.subTest(argv=argv):
                r = subprocess.run([sys.executable, "-W", "error", "-m", "bot_bottle", *argv, "--help"],
                                   capture_output=True, text=True, env=env, timeout=30)
                self.assertEqual((r.returncode, r.stderr), (0, ""))
                self.assertIn("usage: bot-bottle", r.stdout)

    def test_bad_usage_is_one_error_line_and_exit_2(self):
        for argv in (["bogus"], ["start", "a", "--prompt", "p"], ["list", "--yaml"],
                     ["start", "a", "--headless"], ["start", "a", "--headless", "--prompt", "p", "--prompt-file", "f"],
                     ["resume", "s", "--headless"], ["logs"], ["logs", "s", "--tail", "x"]):
            err = io.StringIO()
            with self.subTest(argv=argv), contextlib.redirect_stderr(err):
                self.assertEqual(main(argv), 2)
            lines = err.getvalue().strip().splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith("bot-bottle: error: "), lines)

    def test_no_arguments_print_the_usage_and_exit_2(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(main([]), 2)
        text = err.getvalue()
        self.assertTrue(text.startswith("usage: bot-bottle "), text)
        self.assertIn("{start,commit,resume,destroy,list,logs}", text)
        self.assertIn("bot-bottle --help", text)
        self.assertNotIn("required", text)

    def test_version_prints_the_package_version(self):
        import bot_bottle
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["--version"]), 0)
        self.assertEqual(out.getvalue(), f"bot-bottle {bot_bottle.__version__}\n")


if __name__ == "__main__":
    unittest.main()
