"""Every CLI subcommand and flag carries help text (fails when one is added without it)."""

import argparse
import unittest

from bot_bottle.cli import build_parser


class HelpTest(unittest.TestCase):
    def test_every_subcommand_and_flag_has_help(self):
        parser = build_parser()
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
        self.assertEqual(set(subs.choices), {"start", "commit", "resume", "destroy", "list"})
        helped = {c.dest: c.help for c in subs._choices_actions}
        for name, sub in subs.choices.items():
            with self.subTest(cmd=name):
                self.assertTrue(helped.get(name), f"subcommand {name} has no help")
                for action in sub._actions:
                    if isinstance(action, argparse._HelpAction):
                        continue
                    self.assertTrue(action.help, f"{name} {action.option_strings or action.dest} has no help")


if __name__ == "__main__":
    unittest.main()
