"""SubprocessBottleRunner against a fake core CLI: a small script that records argv and env."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from bot_bottle.orchestrator.runner import BottleExit, RunnerError, SubprocessBottleRunner

FAKE_CLI = textwrap.dedent("""
    import json, os, sys
    rec = os.environ["FAKE_RECORD"]
    with open(rec, "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}) + "\\n")
    mode = os.environ.get("FAKE_MODE", "ok")
    cmd = sys.argv[1]
    if mode == "error":
        print("bot-bottle: error: agent 'nope' not found", file=sys.stderr)
        sys.exit(2)
    if cmd in ("start", "resume"):
        print("bot-bottle: slug=acme-widgets-42", file=sys.stderr, flush=True)
        print("agent chatter", file=sys.stderr)
        sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
    if cmd == "list":
        print(json.dumps([{"slug": "acme-widgets-42", "state": "frozen"}]))
    sys.exit(0)
""")


class SubprocessBottleRunnerTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        (self.dir / "fake_cli.py").write_text(FAKE_CLI)
        self.record = self.dir / "record.jsonl"
        self.base_env = {"PATH": os.environ.get("PATH", ""), "FAKE_RECORD": str(self.record),
                         "FORGE_TOKEN": "gitea-secret", "FORGE_WEBHOOK_SECRET": "hook-secret"}

    def runner(self, **env: str) -> SubprocessBottleRunner:
        return SubprocessBottleRunner([sys.executable, str(self.dir / "fake_cli.py")],
                                      {**self.base_env, **env}, timeout=30)

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def start(self, runner: SubprocessBottleRunner, seen: list[str]) -> BottleExit:
        return runner.start(agent="claude", bottles=["py"], label="acme-widgets-42",
                            prompt="fix it", on_slug=seen.append,
                            env={"BOT_BOTTLE_FORGE_SOCKET": "/tmp/s.sock",
                                 "BOT_BOTTLE_FORGE_RUN_TOKEN": "run-tok"})

    def test_start_reads_slug_and_passes_argv_without_forge_secrets(self) -> None:
        seen: list[str] = []
        result = self.start(self.runner(FAKE_EXIT="7"), seen)
        self.assertEqual(result, BottleExit("acme-widgets-42", 7))
        self.assertEqual(seen, ["acme-widgets-42"])
        call = self.calls()[0]
        self.assertEqual(call["argv"], ["start", "claude", "--headless", "--label", "acme-widgets-42",
                                        "--prompt", "fix it", "--bottle", "py"])
        self.assertNotIn("FORGE_TOKEN", call["env"])
        self.assertNotIn("FORGE_WEBHOOK_SECRET", call["env"])
        self.assertEqual(call["env"]["BOT_BOTTLE_FORGE_RUN_TOKEN"], "run-tok")

    def test_a_cli_that_cannot_be_started_is_a_runner_error(self) -> None:
        missing = SubprocessBottleRunner([str(self.dir / "no-such-cli")], self.base_env)
        with self.assertRaisesRegex(RunnerError, "cannot run bot-bottle start"):
            self.start(missing, [])
        with self.assertRaisesRegex(RunnerError, "cannot run bot-bottle commit"):
            missing.freeze("acme-widgets-42")

    def test_prompts_no_argv_can_carry_are_refused_before_spawning(self) -> None:
        runner = self.runner()
        env = {"BOT_BOTTLE_FORGE_SOCKET": "/s", "BOT_BOTTLE_FORGE_RUN_TOKEN": "t"}
        with self.assertRaisesRegex(RunnerError, "at most"):
            runner.start(agent="claude", bottles=[], label="l", prompt="x" * 200_000, env=env,
                         on_slug=lambda s: None)
        with self.assertRaisesRegex(RunnerError, "NUL"):
            runner.resume(slug="acme-widgets-42", prompt="a\x00b", env=env)
        self.assertFalse(self.record.exists(), "nothing was spawned")

    def test_cli_error_line_becomes_runner_error_with_its_message(self) -> None:
        with self.assertRaisesRegex(RunnerError, "agent 'nope' not found"):
            self.start(self.runner(FAKE_MODE="error"), [])

    def test_resume_commit_destroy_and_list_use_the_cli_subcommands(self) -> None:
        runner = self.runner()
        self.assertEqual(runner.resume(slug="acme-widgets-42", prompt="again", env={}),
                         BottleExit("acme-widgets-42", 0))
        runner.freeze("acme-widgets-42")
        runner.destroy("acme-widgets-42")
        self.assertEqual(runner.bottle_states(), {"acme-widgets-42": "frozen"})
        self.assertEqual([c["argv"] for c in self.calls()], [
            ["resume", "acme-widgets-42", "--headless", "--prompt", "again"],
            ["commit", "acme-widgets-42"], ["destroy", "acme-widgets-42"], ["list", "--json"]])
        self.assertTrue(all("FORGE_TOKEN" not in c["env"] for c in self.calls()))

    def test_failing_short_command_raises_runner_error(self) -> None:
        with self.assertRaisesRegex(RunnerError, "commit failed"):
            self.runner(FAKE_MODE="error").freeze("acme-widgets-42")

    def test_invalid_names_never_reach_argv(self) -> None:
        runner = self.runner()
        for bad in ("--help", "../x", "A B", ""):
            with self.subTest(name=bad):
                with self.assertRaises(RunnerError):
                    runner.freeze(bad)
                with self.assertRaises(RunnerError):
                    runner.start(agent=bad, bottles=[], label="l", prompt="p", env={},
                                 on_slug=lambda s: None)
        self.assertFalse(self.record.exists())

    def test_env_beyond_run_variables_is_refused(self) -> None:
        with self.assertRaises(RunnerError):
            self.runner().resume(slug="acme-widgets-42", prompt="p", env={"FORGE_TOKEN": "x"})


if __name__ == "__main__":
    unittest.main()
