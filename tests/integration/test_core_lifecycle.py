"""Integration: the scripted agent in a real bwrap bottle via the CLI, and the CLI's bad-input paths."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
from pathlib import Path

from ._core_home import REPO_ROOT, cli, make_home


class LifecycleTest(unittest.TestCase):
    def test_start_commit_resume_destroy(self):
        home = make_home(self, ["--exit-code", "7"])
        r = cli(home, "start", "scripted", "--headless", "--prompt", "first", "--label", "My Run!")
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(r.stderr.splitlines()[0], "bot-bottle: slug=my-run")
        ws = home / "state" / "my-run" / "bottle" / "workspace"
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: first\n")
        rows = json.loads(cli(home, "list", "--json").stdout)
        self.assertEqual([(x["slug"], x["state"]) for x in rows], [("my-run", "exited")])
        again = cli(home, "start", "scripted", "--headless", "--prompt", "x", "--label", "my run")
        self.assertEqual(again.returncode, 3, again.stderr)
        self.assertEqual(cli(home, "commit", "my-run").returncode, 0)
        self.assertEqual(cli(home, "commit", "my-run").returncode, 0)
        (ws / "AGENT_LOG.md").write_text("tampered after snapshot\n")
        r = cli(home, "resume", "my-run", "--headless", "--prompt", "second")
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(r.stdout, "")   # the agent's output goes to its log, not the CLI's stdout
        self.assertIn("scripted-agent: run 2, saw 1 earlier run(s)\n--- bot-bottle: exit 7 ---\n",
                      cli(home, "logs", "my-run").stdout)
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: first\nrun 2: second\n")
        # safe.directory: as root the workspace is the agent user's, which git calls "dubious"
        log = subprocess.run(["git", "-c", f"safe.directory={ws}", "-C", str(ws), "log", "--format=%s", "bot/work"],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        self.assertEqual(log[:2], ["scripted agent run 2", "scripted agent run 1"])
        self.assertEqual(cli(home, "destroy", "my-run").returncode, 0)
        self.assertFalse((home / "state" / "my-run").exists())
        r = cli(home, "destroy", "my-run")
        self.assertEqual(r.returncode, 0)
        self.assertIn("nothing to destroy", r.stderr)

    def test_commit_stops_a_running_bottle(self):
        home = make_home(self, ["--sleep", "60"])
        env = {"PATH": os.environ["PATH"], "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle", "start", "scripted", "--headless",
                                 "--prompt", "p"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        with proc.stderr:
            self.assertEqual(proc.stderr.readline().strip(), "bot-bottle: slug=scripted")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                meta = json.loads((home / "state" / "scripted" / "metadata.json").read_text())
                if meta.get("pid") and (home / "state" / "scripted" / "bottle" / "workspace" / "AGENT_LOG.md").exists():
                    break
                time.sleep(0.1)
            self.assertEqual(cli(home, "commit", "scripted").returncode, 0)
            self.assertNotEqual(proc.wait(timeout=15), 0)
        rows = json.loads(cli(home, "list", "--json").stdout)
        self.assertEqual(rows[0]["state"], "frozen")
        self.assertTrue((home / "state" / "scripted" / "snapshots" / "latest.tar").exists())
        cli(home, "destroy", "scripted")

    def test_commit_of_a_running_agent_lets_its_sigterm_handler_run_first(self):
        """What the handler writes is in the snapshot, and the start ends with the agent's own
        exit code (not bwrap killed by --die-with-parent before the handler ran)."""
        home = make_home(self)
        handler = "echo handled > /workspace/TERMED; exit 0"
        script = f"trap '{handler}' TERM; touch /workspace/STARTED; sleep 600 & wait"
        (home / "agents" / "scripted.toml").write_text(
            f'provider = "command"\nbottles = ["b1"]\ncommand = ["sh", "-c", {json.dumps(script)}]\n')
        env = {"PATH": os.environ["PATH"], "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle", "start", "scripted", "--headless",
                                 "--prompt", "p"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        state = home / "state" / "scripted"
        with proc.stderr:
            self.assertEqual(proc.stderr.readline().strip(), "bot-bottle: slug=scripted")
            deadline = time.monotonic() + 20
            while not (state / "bottle" / "workspace" / "STARTED").exists():
                self.assertLess(time.monotonic(), deadline, "the agent never started")
                time.sleep(0.05)
            r = cli(home, "commit", "scripted")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(proc.wait(timeout=15), 0, "the agent's own exit code")
        self.assertEqual((state / "bottle" / "workspace" / "TERMED").read_text(), "handled\n")
        with tarfile.open(state / "snapshots" / "latest.tar") as tar:
            self.assertIn("workspace/TERMED", tar.getnames())
        cli(home, "destroy", "scripted")


class BadInputTest(unittest.TestCase):
    def assert_error(self, r, code, text):
        self.assertEqual(r.returncode, code, r.stderr)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("bot-bottle: error: "), lines[0])
        self.assertIn(text, lines[0])

    def test_bad_inputs_give_one_line_and_documented_codes(self):
        home = make_home(self)
        self.assert_error(cli(home, "start", "ghost", "--headless", "--prompt", "p"), 2, "not found")
        self.assert_error(cli(home, "start", "scripted", "--headless", "--prompt", "p", "--bottle", "nob"),
                          2, "nob.toml")
        (home / "agents" / "broken.toml").write_text("provider = [\n")
        self.assert_error(cli(home, "start", "broken", "--headless", "--prompt", "p"), 2, "malformed TOML")
        self.assert_error(cli(home, "start", "scripted", "--headless", "--prompt", "p", "--label", "!!"),
                          2, "empty slug")
        self.assert_error(cli(home, "resume", "nobody", "--headless", "--prompt", "p"), 3, "no bottle")
        self.assert_error(cli(home, "commit", "nobody"), 3, "no bottle")
        self.assert_error(cli(home, "start", "scripted", "--prompt", "p"), 2, "--headless")
        self.assertEqual(list((home / "state").glob("*/")) if (home / "state").exists() else [], [])

    def test_resume_of_never_frozen_slug_is_a_conflict(self):
        home = make_home(self)
        self.assertEqual(cli(home, "start", "scripted", "--headless", "--prompt", "p").returncode, 0)
        self.assert_error(cli(home, "resume", "scripted", "--headless", "--prompt", "p"), 3, "never frozen")
        cli(home, "destroy", "scripted")

    def test_missing_bwrap_exits_4_with_install_hint_and_leaves_nothing(self):
        home = make_home(self)
        with tempfile.TemporaryDirectory() as bindir:
            os.symlink(shutil.which("git"), Path(bindir) / "git")
            r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=bindir)
        self.assert_error(r, 4, "apt-get install bubblewrap")
        self.assertFalse((home / "state" / "scripted").exists())

    def test_dry_run_prints_plan_and_changes_nothing(self):
        home = make_home(self)
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        plan = json.loads(r.stdout)
        if os.geteuid() == 0:   # no user namespace (it would map root in); the agent user instead
            self.assertIn("--unshare-net", plan["argv"])
            self.assertNotIn("--unshare-all", plan["argv"])
            self.assertIn("--reuid", plan["argv"][plan["argv"].index("--"):])
        else:
            self.assertIn("--unshare-all", plan["argv"])
        self.assertNotIn("--share-net", plan["argv"])
        self.assertNotIn(str(Path.home()), [m["src"] for m in plan["mounts"]])
        self.assertFalse((home / "state" / "scripted").exists())


if __name__ == "__main__":
    unittest.main()
