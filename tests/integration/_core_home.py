"""Test helper: a temp BOT_BOTTLE_HOME with a git repo, a scripted agent and a bottle, and a CLI runner."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT = "/opt/bot-bottle/bot_bottle/testing/scripted_agent.py"


def make_home(testcase, agent_args=()):
    tmp = tempfile.TemporaryDirectory()
    testcase.addCleanup(tmp.cleanup)
    home = Path(tmp.name)
    (home / "agents").mkdir()
    (home / "bottles").mkdir()
    src = home / "src"
    src.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-C", str(src)]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    (src / "README").write_text("hello\n")
    subprocess.run(git + ["add", "README"], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    argv = ", ".join(f'"{a}"' for a in ["python3", AGENT, *agent_args])
    (home / "agents" / "scripted.toml").write_text(f'provider = "command"\nbottles = ["b1"]\ncommand = [{argv}]\n')
    (home / "bottles" / "b1.toml").write_text(f'repo = "{src}"\nnetwork = "none"\n')
    return home


def cli(home, *args, path=None, timeout=60, extra_env=None):
    env = {"PATH": path if path is not None else os.environ.get("PATH", "/usr/bin:/bin"),
           "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), **(extra_env or {})}
    return subprocess.run([sys.executable, "-W", "error", "-m", "bot_bottle", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=str(REPO_ROOT))
