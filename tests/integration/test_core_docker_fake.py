"""Integration: the docker backend against a fake `docker` executable that records its argv."""

import json
import os
import stat
import tempfile
import unittest
from pathlib import Path

from ._core_home import cli, make_home

FAKE = """#!/usr/bin/env python3
import json, os, sys
here = os.path.dirname(os.path.abspath(sys.argv[0]))
with open(os.path.join(here, "log"), "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
with open(os.path.join(here, "rc")) as fh:
    sys.exit(int(fh.read()) if sys.argv[1] == "run" else 0)
"""


class DockerFakeTest(unittest.TestCase):
    def test_docker_lifecycle_calls_run_commit_rm_and_internal_network(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\nimage = "img:1"\n')
        with tempfile.TemporaryDirectory() as bindir:
            (Path(bindir) / "docker").write_text(FAKE)
            os.chmod(Path(bindir) / "docker", stat.S_IRWXU)
            log = Path(bindir) / "log"
            path = bindir + ":" + os.environ["PATH"]
            (Path(bindir) / "rc").write_text("5")
            env = {}
            r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=path, extra_env=env)
            self.assertEqual(r.returncode, 5, r.stderr)
            self.assertEqual(cli(home, "commit", "scripted", path=path, extra_env=env).returncode, 0)
            self.assertEqual(cli(home, "destroy", "scripted", path=path, extra_env=env).returncode, 0)
            calls = [json.loads(line) for line in log.read_text().splitlines()]
        self.assertEqual(calls[0], ["network", "create", "--internal", "bot-bottle-scripted"])
        run = calls[1]
        self.assertEqual(run[:4], ["run", "--rm", "--name", "bot-bottle-scripted"])
        self.assertIn("img:1", run)
        self.assertEqual(calls[2], ["commit", "bot-bottle-scripted", "bot-bottle-scripted:frozen"])
        self.assertIn(["rm", "-f", "bot-bottle-scripted"], calls[3:])

    def test_missing_docker_exits_4(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text(f'dir = "{home / "src"}"\nbackend = "docker"\n')
        with tempfile.TemporaryDirectory() as bindir:
            r = cli(home, "start", "scripted", "--headless", "--prompt", "p", path=bindir)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("docker not found", r.stderr)
        self.assertFalse((home / "state" / "scripted").exists())


if __name__ == "__main__":
    unittest.main()
