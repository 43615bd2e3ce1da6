"""Integration: bot_bottle.api drives the scripted agent in a real bwrap bottle
(start_headless → freeze → resume_headless sees its earlier run → destroy), in-process."""

import os
import subprocess
import unittest

from bot_bottle import api
from bot_bottle.errors import BottleError, StateConflictError

from ._core_home import make_home


class ApiInBwrapTest(unittest.TestCase):
    def test_api_lifecycle_with_the_scripted_agent(self):
        home = make_home(self, ["--exit-code", "5"])
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        slugs = []
        self.assertEqual(api.start_headless(home, "scripted", "one", environ=environ, label="api run",
                                            on_slug=slugs.append), 5)
        ws = home / "state" / "api-run" / "bottle" / "workspace"
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: one\n")
        with self.assertRaises(StateConflictError):
            api.resume_headless(home, "api-run", "too early", environ=environ)
        api.freeze(home, "api-run", environ=environ)
        self.assertEqual([r["state"] for r in api.list_bottles(home)], ["frozen"])
        self.assertEqual(api.resume_headless(home, "api-run", "two", environ=environ, on_slug=slugs.append), 5)
        self.assertEqual(slugs, ["api-run", "api-run"])
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: one\nrun 2: two\n")
        # safe.directory: as root the workspace is the agent user's, which git calls "dubious"
        branch = subprocess.run(["git", "-c", f"safe.directory={ws}", "-C", str(ws), "log", "--format=%s", "bot/work"],
                                capture_output=True, text=True, check=True).stdout.split("\n")
        self.assertEqual(branch[:2], ["scripted agent run 2", "scripted agent run 1"])
        self.assertTrue(api.destroy(home, "api-run", environ=environ))
        self.assertFalse((home / "state" / "api-run").exists())
        self.assertFalse(api.destroy(home, "api-run", environ=environ))

    def test_every_api_error_is_a_bottle_error(self):
        home = make_home(self)
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for call in (lambda: api.start_headless(home, "nobody", "p", environ=environ),
                     lambda: api.resume_headless(home, "nobody", "p", environ=environ),
                     lambda: api.freeze(home, "nobody", environ=environ),
                     lambda: api.destroy(home, "Not/A/Slug", environ=environ)):
            with self.subTest(call=call), self.assertRaises(BottleError):
                call()


if __name__ == "__main__":
    unittest.main()
