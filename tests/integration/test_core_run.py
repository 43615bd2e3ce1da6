"""Integration, real bwrap bottles through the CLI: the prompt arrives byte for byte on stdin
and in the prompt file, the wall-time limit, the agent log under a flood of output, a parent
that goes away, tools and PATH, the program check, and `--workspace`."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from ._core_home import REPO_ROOT, cli, make_home


def agent(home, name, argv, extra=""):
    (home / "agents" / f"{name}.toml").write_text(
        f'provider = "command"\nbottles = ["b1"]\ncommand = [{", ".join(json.dumps(a) for a in argv)}]\n{extra}')


def cli_env(home, **extra):
    return {"PATH": os.environ["PATH"], "BOT_BOTTLE_HOME": str(home), "PYTHONPATH": str(REPO_ROOT), **extra}


class PromptTest(unittest.TestCase):
    def test_a_large_non_ascii_prompt_arrives_byte_exact_on_stdin_and_in_the_file(self):
        home = make_home(self)
        agent(home, "cat", ["/bin/sh", "-c", 'cat > STDIN && cat "$BOT_BOTTLE_PROMPT_FILE" > FILE'])
        prompt = ("- a bullet\n--help\n-x\n@/etc/passwd\nünïcødé ✓ 日本語\n" * 4000).encode()
        self.assertGreater(len(prompt), 128 * 1024)
        path = home / "prompt.md"
        path.write_bytes(prompt)
        ws = home / "state" / "cat" / "bottle" / "workspace"
        r = cli(home, "start", "cat", "--headless", "--prompt-file", str(path))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(((ws / "STDIN").read_bytes(), (ws / "FILE").read_bytes()), (prompt, prompt))
        self.assertEqual(cli(home, "commit", "cat").returncode, 0)
        done = subprocess.run([sys.executable, "-m", "bot_bottle", "resume", "cat", "--headless", "--prompt-file", "-"],
                              input=prompt[::-1][:200000].decode("utf-8", "ignore").encode(), env=cli_env(home),
                              capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        expected = prompt[::-1][:200000].decode("utf-8", "ignore").encode()
        self.assertEqual(((ws / "STDIN").read_bytes(), (ws / "FILE").read_bytes()), (expected, expected))
        r = cli(home, "commit", "cat")
        r = cli(home, "resume", "cat", "--headless", "--prompt", "- a")
        self.assertEqual(((ws / "STDIN").read_bytes(), (ws / "FILE").read_bytes()), (b"- a", b"- a"))


class TimeoutTest(unittest.TestCase):
    def test_an_agent_past_its_time_limit_is_stopped_and_the_cli_exits_124(self):
        home = make_home(self)
        agent(home, "slow", ["/bin/sh", "-c", "echo started; exec sleep 60"], "timeout = 1\n")
        r = cli(home, "start", "slow", "--headless", "--prompt", "p", timeout=30)
        self.assertEqual(r.returncode, 124, r.stderr)
        self.assertEqual(r.stderr.splitlines()[1:], ["bot-bottle: timeout: the agent ran past its 1 s limit"])
        [row] = json.loads(cli(home, "list", "--json").stdout)
        self.assertEqual((row["exit_code"], row["timed_out"], row["state"]), (124, True, "exited"))
        log = cli(home, "logs", "slow").stdout.splitlines()
        self.assertTrue(log[1].startswith("--- bot-bottle: limits: "), log)
        self.assertEqual(log[2:], ["started", "--- bot-bottle: timeout: the agent ran past its 1 s limit ---",
                                   "--- bot-bottle: exit 124 ---"])

    def test_the_smaller_of_the_agent_and_bottle_limits_wins(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text((home / "bottles" / "b1.toml").read_text() + "timeout = 1\n")
        agent(home, "slow", ["sleep", "60"], "timeout = 3600\n")
        r = cli(home, "start", "slow", "--headless", "--prompt", "p", timeout=30)
        self.assertEqual(r.returncode, 124, r.stderr)
        self.assertIn("its 1 s limit", r.stderr)


FLOOD = ("import os, sys\n"
         "out = sys.stdout.buffer\n"
         "block = b'x' * (1 << 20)\n"
         "for _ in range(100):\n"
         "    out.write(block)\n"
         "out.write(('key=' + os.environ['FLOOD_KEY'] + ' THE-END').encode())\n")


class FloodTest(unittest.TestCase):
    def test_100_mb_without_a_newline_keeps_the_cli_small_and_the_log_capped_with_its_tail(self):
        home = make_home(self)
        (home / "bottles" / "b1.toml").write_text((home / "bottles" / "b1.toml").read_text() + 'env = ["FLOOD_KEY"]\n')
        agent(home, "flood", ["python3", "-c", FLOOD])
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle", "start", "flood", "--headless", "--prompt", "p"],
                                env=cli_env(home, FLOOD_KEY="flood-secret-value-42"), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.assertEqual(proc.returncode, 0)
        self.assertLess(usage.ru_maxrss, 60 * 1024, "peak RSS (KiB) of the CLI and its children")
        state = home / "state" / "flood"
        sizes = [p.stat().st_size for p in state.iterdir() if p.name.startswith("agent.log")]
        self.assertLessEqual(sum(sizes), 10 * 1024 * 1024)
        self.assertGreaterEqual(sum(sizes), 5 * 1024 * 1024)
        tail = cli(home, "logs", "flood", "--tail", "2").stdout
        self.assertTrue(tail.endswith("x" * 1000 + "key=[redacted] THE-END\n--- bot-bottle: exit 0 ---\n"), tail[-200:])


class ParentGoneTest(unittest.TestCase):
    def test_a_closed_stderr_before_the_slug_line_leaves_the_bottle_and_the_agent_runs_to_its_end(self):
        home = make_home(self, ["--exit-code", "3"])
        read_end, write_end = os.pipe()
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle", "start", "scripted", "--headless", "--prompt",
                                 "still here"], env=cli_env(home), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=write_end)
        os.close(write_end)
        os.close(read_end)   # the parent is gone before the CLI writes its first line
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.assertEqual(proc.wait(timeout=60), 3)
        meta = json.loads((home / "state" / "scripted" / "metadata.json").read_text())
        self.assertEqual((meta["state"], meta["exit_code"]), ("exited", 3))
        ws = home / "state" / "scripted" / "bottle" / "workspace"
        self.assertEqual((ws / "AGENT_LOG.md").read_text(), "run 1: still here\n")
        self.assertIn("--- bot-bottle: exit 3 ---", cli(home, "logs", "scripted").stdout)

    def test_a_parent_that_stops_reading_after_the_slug_line_still_gets_the_run_recorded(self):
        home = make_home(self)
        agent(home, "slow", ["sleep", "60"], "timeout = 1\n")
        proc = subprocess.Popen([sys.executable, "-m", "bot_bottle", "start", "slow", "--headless", "--prompt", "p"],
                                env=cli_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        self.assertEqual(proc.stderr.readline(), b"bot-bottle: slug=slow\n")
        proc.stderr.close()   # the timeout line will meet a broken pipe
        self.assertEqual(proc.wait(timeout=60), 124)
        meta = json.loads((home / "state" / "slow" / "metadata.json").read_text())
        self.assertEqual((meta["exit_code"], meta["timed_out"]), (124, True))


class ToolsTest(unittest.TestCase):
    def test_a_program_from_a_tools_dir_on_the_path_runs_in_the_bottle(self):
        home = make_home(self)
        user = tempfile.TemporaryDirectory()
        self.addCleanup(user.cleanup)
        bindir = Path(user.name) / ".local" / "bin"
        bindir.mkdir(parents=True)
        (bindir / "my-agent").write_text('#!/bin/sh\necho "$PATH" > PATH.txt\n')
        os.chmod(bindir / "my-agent", 0o755)
        agent(home, "tool", ["my-agent"], 'tools = ["~/.local/bin"]\npath = ["~/.local/bin"]\n')
        r = cli(home, "start", "tool", "--headless", "--prompt", "p", extra_env={"HOME": user.name})
        self.assertEqual(r.returncode, 0, r.stderr)
        ws = home / "state" / "tool" / "bottle" / "workspace"
        self.assertEqual((ws / "PATH.txt").read_text(), f"{bindir}:/usr/local/bin:/usr/bin:/bin\n")

    def test_a_missing_program_is_one_line_exit_4_and_no_bottle(self):
        home = make_home(self)
        agent(home, "ghost", ["no-such-agent-cli"])
        r = cli(home, "start", "ghost", "--headless", "--prompt", "p")
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertEqual(r.stderr, "bot-bottle: error: agent 'ghost': 'no-such-agent-cli' not found on the bottle's "
                                   "PATH (/usr/local/bin:/usr/bin:/bin); add its directory to the agent's path/tools\n")
        self.assertFalse((home / "state" / "ghost").exists())


class WorkspaceTest(unittest.TestCase):
    def test_the_agent_works_in_the_given_checkout_and_the_bottle_repo_sits_beside_it(self):
        home = make_home(self)
        checkout = home.parent / f"{home.name}-checkout"
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(checkout)], check=False))
        subprocess.run(["git", "clone", "-q", str(home / "src"), str(checkout)], check=True)
        r = cli(home, "start", "scripted", "--headless", "--prompt", "p", "--workspace", str(checkout))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(checkout.exists())
        ws = home / "state" / "scripted" / "bottle" / "workspace"
        self.assertEqual((ws / "b1" / "README").read_text(), "hello\n")
        git = ["git", "-c", f"safe.directory={ws}", "-C", str(ws)]   # as root: the agent user's
        log = subprocess.run([*git, "log", "--format=%s", "-1", "bot/work"],
                             capture_output=True, text=True, check=True).stdout
        self.assertEqual(log, "scripted agent run 1\n")
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                                check=True).stdout
        self.assertEqual(status, "")


if __name__ == "__main__":
    unittest.main()
