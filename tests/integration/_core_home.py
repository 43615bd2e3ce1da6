"""Test helper: a temp BOT_BOTTLE_HOME with a git repo, a scripted agent and a bottle, and a CLI runner."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bot_bottle.demo_support.homes import make_scripted_home

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_home(testcase, agent_args=()):
    tmp = tempfile.TemporaryDirectory()
    testcase.addCleanup(tmp.cleanup)
    return make_scripted_home(Path(tmp.name), agent_args)


def cli(home, *args, path=None, timeout=60, extra_env=None):
    env = {"PATH": path if path is not None else os.environ.get("PATH", "/usr/bin:/bin"),
           "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
    return subprocess.run([sys.executable, "-W", "error", "-m", "bot_bottle", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=str(REPO_ROOT))
