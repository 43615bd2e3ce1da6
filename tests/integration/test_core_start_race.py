"""Integration: a `commit` or `destroy` that lands after the CLI printed the slug but before the
sandbox's pid is in the metadata (the orchestrator stops a run the moment it learns its slug).
The commit/destroy runs in the `on_slug` hook itself, so it lands in that window every time;
real bwrap, the scripted agent."""

import os
import unittest

from bot_bottle import api
from bot_bottle.agent_run import STOPPED_EXIT
from bot_bottle.errors import StateConflictError

from ._core_home import make_home


class CommitOrDestroyBeforeThePidTest(unittest.TestCase):
    def setUp(self):
        # a long sleep: an agent that runs although its bottle was frozen keeps the test waiting
        # and then fails it; one that never starts costs nothing
        self.home = make_home(self, ["--sleep", "15"])
        self.environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.addCleanup(lambda: [api.destroy(self.home, row["slug"], environ=self.environ)
                                 for row in api.list_bottles(self.home)])

    def freeze(self, slug):
        api.freeze(self.home, slug, environ=self.environ)

    def workspace(self, slug):
        return self.home / "state" / slug / "bottle" / "workspace"

    def test_a_bottle_frozen_before_its_pid_is_known_never_runs_its_agent(self):
        code = api.start_headless(self.home, "scripted", "one", environ=self.environ,
                                  label="race", on_slug=self.freeze)
        self.assertEqual(code, STOPPED_EXIT)
        [row] = api.list_bottles(self.home)
        self.assertEqual((row["state"], row["exit_code"]), ("frozen", STOPPED_EXIT))
        self.assertFalse((self.workspace("race") / "AGENT_LOG.md").exists())
        log = (self.home / "state" / "race" / "agent.log").read_text()
        self.assertIn("stopped before the agent started: the bottle is frozen", log)

    def test_a_resume_frozen_before_its_pid_is_known_never_runs_its_agent(self):
        home, env = self.home, self.environ
        # a bottle with one finished run, frozen; then a resume that is committed at once
        (home / "agents" / "quick.toml").write_text(
            (home / "agents" / "scripted.toml").read_text().replace('"--sleep", "15"', ""))
        self.assertEqual(api.start_headless(home, "quick", "one", environ=env, label="again"), 0)
        self.freeze("again")
        (home / "agents" / "quick.toml").write_text((home / "agents" / "scripted.toml").read_text())
        code = api.resume_headless(home, "again", "two", environ=env, on_slug=self.freeze)
        self.assertEqual(code, STOPPED_EXIT)
        self.assertEqual([r["state"] for r in api.list_bottles(home)], ["frozen"])
        self.assertEqual((self.workspace("again") / "AGENT_LOG.md").read_text(), "run 1: one\n")

    def test_a_bottle_destroyed_before_its_pid_is_known_leaves_nothing_behind(self):
        def destroy(slug):
            self.assertTrue(api.destroy(self.home, slug, environ=self.environ))
        with self.assertRaisesRegex(StateConflictError, "destroyed before its agent started"):
            api.start_headless(self.home, "scripted", "one", environ=self.environ,
                               label="gone", on_slug=destroy)
        self.assertEqual(api.list_bottles(self.home), [])
        self.assertFalse((self.home / "state" / "gone").exists())

    def test_a_frozen_bottle_still_resumes_and_then_runs_its_agent(self):
        home, env = self.home, self.environ
        (home / "agents" / "scripted.toml").write_text(
            (home / "agents" / "scripted.toml").read_text().replace('"--sleep", "15"', ""))
        self.assertEqual(api.start_headless(home, "scripted", "one", environ=env, label="later",
                                            on_slug=self.freeze), STOPPED_EXIT)
        self.assertEqual(api.resume_headless(home, "later", "two", environ=env), 0)
        # the agent's first run is the resume's
        self.assertEqual((self.workspace("later") / "AGENT_LOG.md").read_text(), "run 1: two\n")


if __name__ == "__main__":
    unittest.main()
