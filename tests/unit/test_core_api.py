"""bot_bottle.api (start_headless, resume_headless, freeze, destroy, list_bottles) against a
fake `bwrap` on PATH that records its argv, plays the agent, and exits with a chosen code."""

import contextlib
import io
import json
import os
import stat
import tempfile
import unittest
from pathlib import Path

from bot_bottle import api
from bot_bottle.errors import (BackendError, BottleError, ManifestError, StateConflictError,
                               UsageError)

# Finds the --bind for /workspace, appends "<argv after the last -->|<stdin>" to LOG there (as
# root, bwrap's `--` is followed by the drop to the agent user and its own `--`), exits with ./rc.
FAKE_BWRAP = """#!/usr/bin/env python3
import json, os, sys
here = os.path.dirname(os.path.abspath(sys.argv[0]))
argv = sys.argv[1:]
with open(os.path.join(here, "log"), "a") as fh:
    fh.write(json.dumps(argv) + "\\n")
ws = next(argv[i + 1] for i in range(len(argv) - 2) if argv[i] == "--bind" and argv[i + 2] == "/workspace")
env = os.environ  # bwrap hands its own environment to the agent
with open(os.path.join(ws, "LOG"), "a") as fh:
    fh.write(" ".join(argv[len(argv) - argv[::-1].index("--"):]) + "|" + sys.stdin.read() + "\\n")
with open(os.path.join(here, "rc")) as fh:
    sys.exit(int(fh.read()))
"""


class ApiTestBase(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        root = Path(tmp.name)
        self.home = root / "home"
        self.bin = root / "bin"
        for d in (self.home / "agents", self.home / "bottles", self.bin, root / "src"):
            d.mkdir(parents=True)
        (root / "src" / "README").write_text("hi\n")
        (self.home / "agents" / "ag.toml").write_text(
            'provider = "command"\nbottles = ["b1"]\ncommand = ["python3", "agent.py"]\n')
        (self.home / "bottles" / "b1.toml").write_text(f'dir = "{root / "src"}"\n')
        (self.bin / "bwrap").write_text(FAKE_BWRAP)
        os.chmod(self.bin / "bwrap", stat.S_IRWXU)
        (self.bin / "rc").write_text("0")
        self.environ = {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.slugs = []

    def calls(self):
        log = self.bin / "log"
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    def meta(self, slug):
        return json.loads((self.home / "state" / slug / "metadata.json").read_text())

    def start(self, **kw):
        kw.setdefault("environ", self.environ)
        kw.setdefault("on_slug", self.slugs.append)
        return api.start_headless(self.home, "ag", "first", **kw)


class ApiLifecycleTest(ApiTestBase):
    def test_start_freeze_resume_destroy_through_the_api(self):
        (self.bin / "rc").write_text("7")
        self.assertEqual(self.start(label="Run One"), 7)
        self.assertEqual(self.slugs, ["run-one"])
        ws = self.home / "state" / "run-one" / "bottle" / "workspace"
        self.assertEqual((ws / "README").read_text(), "hi\n")
        self.assertEqual((ws / "LOG").read_text(), "python3 agent.py|first\n")
        self.assertEqual((self.home / "state" / "run-one" / "prompt.txt").read_text(), "first")
        meta = self.meta("run-one")
        self.assertEqual((meta["state"], meta["exit_code"], meta["pid"], meta["agent"], meta["bottles"]),
                         ("exited", 7, None, "ag", ["b1"]))
        self.assertEqual(meta["session"], {"provider": "command", "runs": 1})
        self.assertEqual([r["state"] for r in api.list_bottles(self.home)], ["exited"])

        session = self.home / "state" / "run-one" / "bottle" / "home" / ".agent" / "session"
        session.parent.mkdir()
        session.write_text("provider session")  # what `--continue` needs back on resume
        api.freeze(self.home, "run-one", environ=self.environ)
        api.freeze(self.home, "run-one", environ=self.environ)  # idempotent
        session.unlink()
        self.assertEqual(self.meta("run-one")["state"], "frozen")
        self.assertTrue(self.meta("run-one")["frozen_at"])
        self.assertEqual([r["state"] for r in api.list_bottles(self.home)], ["frozen"])
        (ws / "LOG").write_text("changed after the snapshot\n")

        (self.bin / "rc").write_text("0")
        self.assertEqual(api.resume_headless(self.home, "run-one", "second", environ=self.environ,
                                             on_slug=self.slugs.append), 0)
        self.assertEqual(self.slugs, ["run-one", "run-one"])
        self.assertEqual((ws / "LOG").read_text(),
                         "python3 agent.py|first\npython3 agent.py|second\n")
        self.assertEqual(self.meta("run-one")["session"]["runs"], 2)
        self.assertEqual(session.read_text(), "provider session")

        self.assertTrue(api.destroy(self.home, "run-one", environ=self.environ))
        self.assertFalse((self.home / "state" / "run-one").exists())
        self.assertFalse(api.destroy(self.home, "run-one", environ=self.environ))
        self.assertEqual(api.list_bottles(self.home), [])

    def test_resume_after_an_exit_without_commit_keeps_the_newer_work(self):
        self.start()
        api.freeze(self.home, "ag", environ=self.environ)
        ws = self.home / "state" / "ag" / "bottle" / "workspace"
        api.resume_headless(self.home, "ag", "second", environ=self.environ)
        self.assertEqual(self.meta("ag")["state"], "exited")
        # no commit between the two resumes: the second must start from what the first left
        api.resume_headless(self.home, "ag", "third", environ=self.environ)
        self.assertEqual((ws / "LOG").read_text(),
                         "python3 agent.py|first\npython3 agent.py|second\npython3 agent.py|third\n")
        self.assertEqual(self.meta("ag")["session"]["runs"], 3)

    def test_resume_after_a_commit_restores_the_snapshot(self):
        self.start()
        api.freeze(self.home, "ag", environ=self.environ)
        ws = self.home / "state" / "ag" / "bottle" / "workspace"
        (ws / "LOG").write_text("changed by someone after the commit\n")
        api.resume_headless(self.home, "ag", "second", environ=self.environ)
        self.assertEqual((ws / "LOG").read_text(), "python3 agent.py|first\npython3 agent.py|second\n")

    def test_agent_killed_by_a_signal_gives_128_plus_n(self):
        (self.bin / "bwrap").write_text("#!/bin/sh\nkill -9 $$\n")
        self.assertEqual(self.start(), 128 + 9)

    def test_dry_run_prints_the_plan_and_creates_nothing(self):
        out = io.StringIO()
        self.assertEqual(self.start(dry_run=True, out=out), 0)
        plan = json.loads(out.getvalue())
        self.assertEqual(plan["slug"], "ag")
        argv = plan["argv"]
        self.assertEqual(argv[len(argv) - argv[::-1].index("--"):], ["python3", "agent.py"])
        self.assertEqual(self.calls(), [])
        self.assertFalse((self.home / "state" / "ag").exists())


class CliOverApiTest(ApiTestBase):
    def run_cli(self, *argv):
        from unittest import mock
        from bot_bottle.cli import main
        out, err = io.StringIO(), io.StringIO()
        env = dict(self.environ, BOT_BOTTLE_HOME=str(self.home))
        with mock.patch.dict(os.environ, env, clear=True), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(argv))
        return rc, out.getvalue(), err.getvalue()

    def test_list_table_and_json(self):
        self.assertEqual(self.run_cli("list")[0], 0)
        self.assertEqual(self.run_cli("list")[1].split(), ["SLUG", "AGENT", "STATE", "STARTED_AT"])
        self.assertEqual(self.run_cli("list", "--json")[:2], (0, "[]\n"))
        rc, _, err = self.run_cli("start", "ag", "--headless", "--prompt", "p", "--label", "one")
        self.assertEqual((rc, err.splitlines()[0]), (0, "bot-bottle: slug=one"))
        rc, out, _ = self.run_cli("list")
        self.assertEqual(out.splitlines()[1].split()[:3], ["one", "ag", "exited"])
        rows = json.loads(self.run_cli("list", "--json")[1])
        self.assertEqual(set(rows[0]), {"slug", "agent", "label", "backend", "state", "started_at", "frozen_at",
                                        "exit_code", "run_started_at", "ended_at", "timed_out"})
        self.assertEqual((rows[0]["label"], rows[0]["backend"]), ("one", "bwrap"))
        self.assertEqual((rows[0]["exit_code"], rows[0]["timed_out"]), (0, False))
        self.assertLessEqual(rows[0]["started_at"], rows[0]["run_started_at"])
        self.assertLessEqual(rows[0]["run_started_at"], rows[0]["ended_at"])

    def test_commit_and_destroy_messages(self):
        self.run_cli("start", "ag", "--headless", "--prompt", "p")
        self.assertEqual(self.run_cli("commit", "ag"), (0, "", "bot-bottle: frozen ag\n"))
        self.assertEqual(self.run_cli("destroy", "ag"), (0, "", ""))
        rc, _, err = self.run_cli("destroy", "ag")
        self.assertEqual((rc, err), (0, "bot-bottle: note: no bottle ag, nothing to destroy\n"))


    def test_host_os_errors_are_one_line_exit_4(self):
        (self.home / "state").write_text("not a directory\n")
        rc, out, err = self.run_cli("start", "ag", "--headless", "--prompt", "p")
        self.assertEqual((rc, out), (4, ""))
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertTrue(err.startswith("bot-bottle: error: "), err)

    def test_corrupt_metadata_is_a_conflict_listed_as_corrupt_and_destroyable(self):
        self.run_cli("start", "ag", "--headless", "--prompt", "p")
        self.run_cli("commit", "ag")
        (self.home / "state" / "ag" / "metadata.json").write_text("{not json")
        for argv in (("resume", "ag", "--headless", "--prompt", "p"), ("commit", "ag")):
            with self.subTest(argv=argv):
                rc, _, err = self.run_cli(*argv)
                self.assertEqual(rc, 3)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn("corrupt metadata", err)
        self.assertEqual([(r["slug"], r["state"]) for r in json.loads(self.run_cli("list", "--json")[1])],
                         [("ag", "corrupt")])
        self.assertEqual(self.run_cli("list")[0], 0)
        self.assertEqual(self.run_cli("destroy", "ag")[:2], (0, ""))
        self.assertFalse((self.home / "state" / "ag").exists())


class ApiErrorTest(ApiTestBase):
    def assert_raises(self, exc_type, code, call):
        with self.assertRaises(exc_type) as cm:
            call()
        self.assertIsInstance(cm.exception, BottleError)
        self.assertEqual(cm.exception.exit_code, code)
        self.assertNotIn("\n", str(cm.exception))
        return cm.exception

    def assert_no_state(self):
        root = self.home / "state"
        self.assertEqual([p.name for p in root.iterdir() if p.is_dir()] if root.exists() else [], [])

    def test_missing_agent_bottle_and_bad_label_raise_before_anything_is_created(self):
        self.assert_raises(ManifestError, 2, lambda: api.start_headless(self.home, "ghost", "p", environ=self.environ))
        self.assert_raises(ManifestError, 2, lambda: self.start(bottles=["nob"]))
        self.assert_raises(UsageError, 2, lambda: self.start(label="!!!"))
        self.assert_raises(UsageError, 2, lambda: api.start_headless(self.home, "../x", "p", environ=self.environ))
        (self.home / "agents" / "broken.toml").write_text("provider = [\n")
        self.assert_raises(ManifestError, 2, lambda: api.start_headless(self.home, "broken", "p", environ=self.environ))
        self.assertEqual(self.calls(), [])
        self.assertEqual(self.slugs, [])
        self.assert_no_state()

    def test_bottles_come_only_from_home_never_from_the_repository(self):
        src = self.home.parent / "src"
        for d in (src / "bottles", src / ".bot-bottle" / "bottles"):
            d.mkdir(parents=True)
            (d / "evil.toml").write_text(f'dir = "{src}"\nnetwork = "host"\n')
        err = self.assert_raises(ManifestError, 2, lambda: self.start(bottles=["evil"]))
        self.assertIn(str(self.home / "bottles" / "evil.toml"), str(err))
        self.assert_no_state()

    def test_agent_without_bottles_is_a_manifest_error(self):
        (self.home / "agents" / "lonely.toml").write_text('provider = "command"\nbottles = []\ncommand = ["true"]\n')
        err = self.assert_raises(ManifestError, 2,
                                 lambda: api.start_headless(self.home, "lonely", "p", environ=self.environ))
        self.assertIn("no bottles", str(err))
        self.assert_no_state()

    def test_destroy_stops_a_running_bottle_and_removes_everything(self):
        import threading
        import time
        (self.bin / "bwrap").write_text("#!/bin/sh\nexec sleep 30\n")
        result = []
        t = threading.Thread(target=lambda: result.append(self.start()))
        t.start()
        self.addCleanup(t.join, 10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            meta_file = self.home / "state" / "ag" / "metadata.json"
            if meta_file.exists() and json.loads(meta_file.read_text()).get("pid"):
                break
            time.sleep(0.02)
        self.assertTrue(api.destroy(self.home, "ag", environ=self.environ))
        t.join(10)
        self.assertEqual(result, [128 + 15])
        self.assert_no_state()

    def test_missing_bwrap_says_how_to_install_it(self):
        err = self.assert_raises(BackendError, 4, lambda: self.start(environ={"PATH": str(self.home)}))
        self.assertIn("apt-get install bubblewrap", str(err))
        self.assert_no_state()

    def test_failed_create_removes_the_state_dir(self):
        (self.home / "bottles" / "b1.toml").write_text(f'dir = "{self.home / "missing"}"\n')
        self.assert_raises(BackendError, 4, self.start)
        self.assertEqual(self.slugs, [])
        self.assert_no_state()

    def test_failed_clone_removes_the_state_dir(self):
        (self.home / "bottles" / "b1.toml").write_text(f'repo = "{self.home / "no-such-repo"}"\n')
        err = self.assert_raises(BackendError, 4, self.start)
        self.assertIn("git clone", str(err))
        self.assertRegex(str(err), r"failed: fatal: ")  # git's own last line, not a list repr
        self.assert_no_state()

    def test_bwrap_that_cannot_be_executed_removes_the_state_dir(self):
        (self.bin / "bwrap").write_text("#!/nonexistent/interpreter\n")
        self.assert_raises(BackendError, 4, self.start)
        self.assert_no_state()

    def test_slug_in_use_is_a_conflict_and_keeps_the_existing_bottle(self):
        self.start()
        self.assert_raises(StateConflictError, 3, self.start)
        self.assertEqual(self.meta("ag")["state"], "exited")
        self.assertEqual(len(self.calls()), 1)

    def test_resume_of_unknown_never_frozen_or_running_slug_is_a_conflict(self):
        self.assert_raises(StateConflictError, 3,
                           lambda: api.resume_headless(self.home, "nobody", "p", environ=self.environ))
        self.start()
        err = self.assert_raises(StateConflictError, 3,
                                 lambda: api.resume_headless(self.home, "ag", "p", environ=self.environ))
        self.assertIn("never frozen", str(err))
        api.freeze(self.home, "ag", environ=self.environ)
        meta = self.meta("ag") | {"pid": os.getpid()}
        (self.home / "state" / "ag" / "metadata.json").write_text(json.dumps(meta))
        err = self.assert_raises(StateConflictError, 3,
                                 lambda: api.resume_headless(self.home, "ag", "p", environ=self.environ))
        self.assertIn("running", str(err))
        self.assertEqual(len(self.calls()), 1)

    def test_freeze_of_a_slug_with_no_bottle_is_a_conflict(self):
        self.assert_raises(StateConflictError, 3, lambda: api.freeze(self.home, "nobody", environ=self.environ))
        self.assert_no_state()

    def test_bad_slugs_are_usage_errors_everywhere(self):
        for call in (lambda s: api.resume_headless(self.home, s, "p", environ=self.environ),
                     lambda s: api.freeze(self.home, s, environ=self.environ),
                     lambda s: api.destroy(self.home, s, environ=self.environ)):
            for slug in ("../etc", "", "A", "a/b"):
                with self.subTest(slug=slug):
                    self.assert_raises(UsageError, 2, lambda: call(slug))


if __name__ == "__main__":
    unittest.main()
