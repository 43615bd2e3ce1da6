"""The fake core CLI (`tests.support.fake_core_cli`) speaks the CLI surface the
subprocess runner relies on: slug line first, JSON-lines call log, list --json, commit stops a
sleeping start, a second start of a live slug is refused like the real CLI; the prompt on
stdin (`--prompt-file -`), `--workspace` moved in, `logs --tail`, the timeout line."""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from tests.support import fake_core_cli

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeCoreCliTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)

    def run_cli(self, *args, sleep="0", stdin=None):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BOT_BOTTLE_HOME": str(self.home),
               "PYTHONPATH": str(REPO_ROOT), "FAKE_CLI_SLEEP": sleep}
        return subprocess.run([sys.executable, "-W", "error", "-m", "tests.support.fake_core_cli",
                               *args], env=env, capture_output=True, text=True, timeout=30,
                              input=stdin)

    def test_the_prompt_can_come_on_stdin_verbatim(self):
        prompt = "- a bullet\n" + "é" * 100_000
        done = self.run_cli("start", "scripted", "--headless", "--label", "x-5", "--prompt-file", "-",
                            stdin=prompt)
        self.assertEqual(done.returncode, 0, done.stderr)
        resumed = self.run_cli("resume", "x-5", "--headless", "--prompt-file", "-", stdin="--help")
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertEqual([e["prompt"] for e in fake_core_cli.read_log(self.home)], [prompt, "--help"])

    def test_a_workspace_is_moved_into_the_bottle_and_its_branch_recorded(self):
        checkout = self.home / "checkouts" / "x-6"
        subprocess.run(["git", "init", "-q", "-b", "bot-bottle/x-6", str(checkout)], check=True)
        done = self.run_cli("start", "scripted", "--headless", "--label", "x-6", "--prompt", "p",
                            "--workspace", str(checkout))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertFalse(checkout.exists())
        self.assertTrue((self.home / "state" / "x-6" / "workspace" / ".git").is_dir())
        [entry] = fake_core_cli.read_log(self.home)
        self.assertEqual((entry["workspace"], entry["workspace_branch"]),
                         (str(checkout), "bot-bottle/x-6"))
        self.assertEqual(self.run_cli("destroy", "x-6").returncode, 0)
        self.assertFalse((self.home / "state" / "x-6").exists())

    def test_logs_tail_the_agent_output_and_a_timeout_ends_like_the_real_cli(self):
        (self.home / "fake-cli.json").write_text(json.dumps(
            {"output": "one\ntwo\nthree\n", "timeout": 30}))
        done = self.run_cli("start", "scripted", "--headless", "--label", "x-7", "--prompt", "p")
        self.assertEqual(done.returncode, 124)
        self.assertEqual(done.stderr.splitlines()[-1],
                         "bot-bottle: timeout: the agent ran past its 30 s limit")
        self.assertEqual(self.run_cli("logs", "x-7", "--tail", "2").stdout, "two\nthree\n")
        self.assertEqual(self.run_cli("logs", "nope").returncode, 3)
        (self.home / "fake-cli.json").write_text(json.dumps({"exit_code": 5}))
        self.run_cli("commit", "x-7")
        self.assertEqual(self.run_cli("resume", "x-7", "--headless", "--prompt", "p").returncode, 5)

    def test_start_prints_the_slug_line_first_and_logs_the_call(self):
        done = self.run_cli("start", "scripted", "--headless", "--label", "acme/widgets#42",
                            "--prompt", "do it", "--bottle", "b1")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stderr.splitlines()[0], "bot-bottle: slug=acme-widgets-42")
        [entry] = fake_core_cli.read_log(self.home)
        self.assertEqual((entry["cmd"], entry["slug"], entry["agent"], entry["prompt"], entry["bottles"]),
                         ("start", "acme-widgets-42", "scripted", "do it", ["b1"]))

    def test_list_json_shows_known_slugs_until_destroyed(self):
        self.assertEqual(json.loads(self.run_cli("list", "--json").stdout), [])
        self.run_cli("start", "scripted", "--headless", "--label", "x-1", "--prompt", "p")
        rows = json.loads(self.run_cli("list", "--json").stdout)
        self.assertEqual([(r["slug"], r["state"]) for r in rows], [("x-1", "exited")])
        self.assertEqual(self.run_cli("commit", "x-1").returncode, 0)
        self.assertEqual(json.loads(self.run_cli("list", "--json").stdout)[0]["state"], "frozen")
        resumed = self.run_cli("resume", "x-1", "--headless", "--prompt", "again")
        self.assertEqual(resumed.stderr.splitlines()[0], "bot-bottle: slug=x-1")
        self.assertEqual(self.run_cli("destroy", "x-1").returncode, 0)
        self.assertEqual(json.loads(self.run_cli("list", "--json").stdout), [])

    def test_second_start_of_a_live_slug_is_a_state_conflict(self):
        self.run_cli("start", "scripted", "--headless", "--label", "x-2", "--prompt", "p")
        again = self.run_cli("start", "scripted", "--headless", "--label", "x-2", "--prompt", "p")
        self.assertEqual(again.returncode, 3)
        self.assertTrue(again.stderr.startswith("bot-bottle: error: "), again.stderr)

    def test_commit_stops_a_sleeping_start(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BOT_BOTTLE_HOME": str(self.home),
               "PYTHONPATH": str(REPO_ROOT), "FAKE_CLI_SLEEP": "30"}
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_core_cli", "start",
                                 "scripted", "--headless", "--label", "x-3", "--prompt", "p"],
                                env=env, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(), proc.stderr.close()))
        self.assertEqual(proc.stderr.readline().strip(), "bot-bottle: slug=x-3")
        started = time.monotonic()
        self.assertEqual(self.run_cli("commit", "x-3").returncode, 0)
        self.assertEqual(proc.wait(10), 0)
        self.assertLess(time.monotonic() - started, 10)

    def test_fail_start_config_fails_before_a_slug(self):
        (self.home / "fake-cli.json").write_text('{"fail_start": true}')
        done = self.run_cli("start", "scripted", "--headless", "--label", "x-4", "--prompt", "p")
        self.assertEqual(done.returncode, 3)
        self.assertNotIn("slug=", done.stderr)


if __name__ == "__main__":
    unittest.main()
