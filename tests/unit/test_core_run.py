"""One run of the agent through bot_bottle.api with a fake `bwrap` on PATH that prints to stdout
and stderr: the agent log (headers, exit lines, redaction, `logs`), the run's fields in
`list --json`, the check that the agent's program is visible in the bottle, and how `tools`
and `path` reach the bwrap argv and the bottle's PATH."""

import contextlib
import io
import os
import stat
import unittest
from unittest import mock

from bot_bottle import api
from bot_bottle.cli import main
from bot_bottle.errors import BackendError, ManifestError, UsageError

from .test_core_api import ApiTestBase

FAKE_BWRAP = """#!/usr/bin/env python3
import os, sys
here = os.path.dirname(os.path.abspath(sys.argv[0]))
with open(os.path.join(here, "argv"), "w") as fh:
    fh.write("\\0".join(sys.argv[1:]))
print("out: " + " ".join(sys.argv[len(sys.argv) - sys.argv[::-1].index("--"):]), flush=True)
print("err: key=" + os.environ.get("API_KEY", "-") + " path=" + os.environ["PATH"], file=sys.stderr, flush=True)
sys.stdout.write("no newline at the end")
sys.exit(int(open(os.path.join(here, "rc")).read()))
"""


class RunTestBase(ApiTestBase):
    def setUp(self):
        super().setUp()
        (self.bin / "bwrap").write_text(FAKE_BWRAP)
        (self.home / "bottles" / "b1.toml").write_text(
            (self.home / "bottles" / "b1.toml").read_text() + 'env = ["API_KEY"]\n')
        self.environ["API_KEY"] = "sk-live-0123456789"

    def log(self, slug="ag", tail=None):
        out = io.BytesIO()
        api.logs(self.home, slug, out, tail=tail)
        return out.getvalue().decode()

    def argv(self):
        return (self.bin / "argv").read_text().split("\0")

    def agent(self, text):
        (self.home / "agents" / "ag.toml").write_text('provider = "command"\nbottles = ["b1"]\n' + text)


class AgentLogTest(RunTestBase):
    def test_each_run_appends_a_header_the_output_and_an_exit_line_with_secrets_redacted(self):
        (self.bin / "rc").write_text("3")
        self.assertEqual(self.start(), 3)
        api.freeze(self.home, "ag", environ=self.environ)
        (self.bin / "rc").write_text("0")
        self.assertEqual(api.resume_headless(self.home, "ag", "again", environ=self.environ), 0)
        lines = self.log().splitlines()
        self.assertRegex(lines[0], r"^--- bot-bottle: run 1 \(start\) at \d{4}-\d\d-\d\dT[\d:]+\+00:00 ---$")
        self.assertRegex(lines[1], r"^--- bot-bottle: limits: .* ---$")
        self.assertEqual(lines[2:5], ["out: python3 agent.py",
                                      "err: key=[redacted] path=/usr/local/bin:/usr/bin:/bin",
                                      "no newline at the end"])
        self.assertEqual(lines[5], "--- bot-bottle: exit 3 ---")
        self.assertRegex(lines[6], r"^--- bot-bottle: run 2 \(resume\) at ")
        self.assertEqual(lines[-1], "--- bot-bottle: exit 0 ---")
        self.assertNotIn("sk-live-0123456789", self.log())
        log = self.home / "state" / "ag" / "agent.log"
        self.assertEqual(stat.S_IMODE(log.stat().st_mode), 0o600)
        self.assertEqual(self.log(tail=2), "no newline at the end\n--- bot-bottle: exit 0 ---\n")

    def test_the_log_lives_outside_what_the_bottle_binds(self):
        self.start()
        argv = self.argv()
        state = self.home / "state" / "ag"
        binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
        self.assertTrue((state / "agent.log").exists())
        for src in binds:
            self.assertFalse(str(state / "agent.log").startswith(src.rstrip("/") + "/"), src)
            self.assertNotEqual(src, str(state))

    def test_logs_of_an_unknown_slug_is_a_conflict_and_a_negative_tail_a_usage_error(self):
        with self.assertRaises(Exception) as cm:
            self.log("nobody")
        self.assertEqual(cm.exception.exit_code, 3)
        self.start()
        with self.assertRaises(UsageError):
            self.log(tail=-1)

    def test_the_log_cap_comes_from_the_environment_and_is_checked(self):
        self.environ["BOT_BOTTLE_LOG_MAX_BYTES"] = "12"
        with self.assertRaisesRegex(UsageError, "BOT_BOTTLE_LOG_MAX_BYTES"):
            self.start()
        self.environ["BOT_BOTTLE_LOG_MAX_BYTES"] = "1024"
        (self.bin / "bwrap").write_text("#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x\n")
        self.start()
        files = [p for p in (self.home / "state" / "ag").iterdir() if p.name.startswith("agent.log")]
        self.assertLessEqual(sum(p.stat().st_size for p in files), 1024)
        self.assertTrue(self.log().endswith("xxx\n--- bot-bottle: exit 0 ---\n"))


class ListRunFieldsTest(RunTestBase):
    def test_list_json_shows_the_last_runs_exit_code_and_times(self):
        (self.bin / "rc").write_text("5")
        self.start()
        [row] = api.list_bottles(self.home)
        self.assertEqual((row["exit_code"], row["timed_out"], row["state"]), (5, False, "exited"))
        self.assertTrue(row["started_at"] <= row["run_started_at"] <= row["ended_at"])
        meta = self.meta("ag")
        self.assertEqual((meta["exit_code"], meta["timed_out"]), (5, False))


class ProgramCheckTest(RunTestBase):
    def assert_exit_4_and_nothing_made(self, message):
        with self.assertRaises(BackendError) as cm:
            self.start()
        self.assertEqual(cm.exception.exit_code, 4)
        self.assertEqual(str(cm.exception), message)
        self.assertFalse((self.home / "state" / "ag").exists())
        self.assertFalse((self.bin / "argv").exists())

    def test_a_program_missing_from_the_bottle_path_is_one_line_exit_4_before_anything_is_made(self):
        self.agent('command = ["no-such-agent-cli", "-p"]\n')
        self.assert_exit_4_and_nothing_made(
            "agent 'ag': 'no-such-agent-cli' not found on the bottle's PATH (/usr/local/bin:/usr/bin:/bin); "
            "add its directory to the agent's path/tools")

    def test_a_provider_binary_is_checked_too(self):
        (self.home / "agents" / "ag.toml").write_text('provider = "claude"\nbottles = ["b1"]\npath = ["/opt/none"]\n')
        from bot_bottle.providers import claude
        self.assert_exit_4_and_nothing_made(
            f"agent 'ag': '{claude.BINARY}' not found on the bottle's PATH (/opt/none:/usr/local/bin:/usr/bin:/bin); "
            "add its directory to the agent's path/tools")

    def test_a_host_program_outside_the_bound_dirs_is_not_visible(self):
        tools = self.home.parent / "tools"
        tools.mkdir()
        prog = tools / "my-agent"
        prog.write_text("#!/bin/sh\n")
        os.chmod(prog, 0o755)
        self.agent(f'command = ["{prog}"]\n')
        self.assert_exit_4_and_nothing_made(
            f"agent 'ag': '{prog}' not found inside the bottle; add its directory to the agent's path/tools")
        self.agent(f'command = ["my-agent"]\npath = ["{tools}"]\n')
        self.assert_exit_4_and_nothing_made(
            f"agent 'ag': 'my-agent' not found on the bottle's PATH ({tools}:/usr/local/bin:/usr/bin:/bin); "
            "add its directory to the agent's path/tools")
        self.agent(f'command = ["{prog}"]\ntools = ["{tools}"]\n')
        self.assertEqual(self.start(), 0)

    def test_a_tool_linking_into_an_unbound_folder_is_named(self):
        tools, share = self.home.parent / "tools", self.home.parent / "share"
        tools.mkdir()
        share.mkdir()
        (share / "real-agent").write_text("#!/bin/sh\n")
        os.chmod(share / "real-agent", 0o755)
        (tools / "my-agent").symlink_to(share / "real-agent")
        self.agent(f'command = ["my-agent"]\ntools = ["{tools}"]\npath = ["{tools}"]\n')
        self.assert_exit_4_and_nothing_made(
            f"agent 'ag': 'my-agent' resolves to {share / 'real-agent'}, which is not bound into the bottle; "
            "add its directory to the agent's tools")
        self.agent(f'command = ["my-agent"]\ntools = ["{tools}", "{share}"]\npath = ["{tools}"]\n')
        self.assertEqual(self.start(), 0)

    def test_dry_run_does_not_check_the_program(self):
        self.agent('command = ["no-such-agent-cli"]\n')
        self.assertEqual(self.start(dry_run=True, out=io.StringIO()), 0)


class ToolsAndPathTest(RunTestBase):
    def test_tools_are_bound_read_only_at_their_path_and_path_entries_lead_the_bottle_path(self):
        user = self.home.parent / "user"
        (user / ".local" / "bin").mkdir(parents=True)
        self.environ["HOME"] = str(user)
        self.agent('command = ["python3", "agent.py"]\ntools = ["~/.local/bin", "/usr/share"]\n'
                   'path = ["~/.local/bin", "/opt/x/bin"]\n')
        self.assertEqual(self.start(), 0)
        argv = self.argv()
        local = str(user / ".local" / "bin")
        i = argv.index(local)
        self.assertEqual(argv[i - 1:i + 2], ["--ro-bind", local, local])
        self.assertLess(i, argv.index("/workspace"), "the bottle's own mounts come after the tools")
        self.assertIn("err: key=[redacted] path=" + f"{local}:/opt/x/bin:/usr/local/bin:/usr/bin:/bin",
                      self.log())

    def test_tools_may_not_expose_the_bot_bottle_home_or_cover_bottle_paths(self):
        (self.home / "state").mkdir()
        for tool in (str(self.home), str(self.home.parent), str(self.home / "state"), "/", "/tmp", "/run", "/dev/shm",
                     "/proc/self"):
            with self.subTest(tool=tool):
                self.agent(f'command = ["true"]\ntools = ["{tool}"]\n')
                with self.assertRaisesRegex(ManifestError, r"ag\.toml: key 'tools' entry .* overlaps"):
                    self.start()
                self.assertFalse((self.home / "state" / "ag").exists())


class CliTest(RunTestBase):
    def run_cli(self, *argv, stdin=b""):
        out, err = io.StringIO(), io.StringIO()
        env = dict(self.environ, BOT_BOTTLE_HOME=str(self.home))
        fake_stdin = io.TextIOWrapper(io.BytesIO(stdin))
        with mock.patch.dict(os.environ, env, clear=True), mock.patch("sys.stdin", fake_stdin), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(argv))
        return rc, out.getvalue(), err.getvalue()

    def test_prompt_file_and_stdin_give_the_same_bytes_as_prompt(self):
        (self.bin / "bwrap").write_text(
            "#!/bin/sh\ncat > \"$(dirname \"$0\")/stdin\"\n")
        prompt = "- a bullet\n--help\n@/etc/passwd ünïcødé ✓\n".encode() * 5000
        path = self.home.parent / "prompt.md"
        path.write_bytes(prompt)
        for args, stdin in ((["--prompt-file", str(path)], b""), (["--prompt-file", "-"], prompt)):
            with self.subTest(args=args):
                rc, _, err = self.run_cli("start", "ag", "--headless", *args, stdin=stdin)
                self.assertEqual(rc, 0, err)
                self.assertEqual((self.bin / "stdin").read_bytes(), prompt)
                self.assertEqual((self.home / "state" / "ag" / "prompt.txt").read_bytes(), prompt)
                self.run_cli("commit", "ag")
                (self.bin / "stdin").unlink()
                rc, _, err = self.run_cli("resume", "ag", "--headless", *args, stdin=stdin)
                self.assertEqual(rc, 0, err)
                self.assertEqual((self.bin / "stdin").read_bytes(), prompt)
                self.run_cli("destroy", "ag")

    def test_bad_prompt_files_are_usage_errors(self):
        nul = self.home.parent / "nul.txt"
        nul.write_bytes(b"a\0b")
        for args, text in ((["--prompt-file", str(self.home / "missing")], "cannot read the prompt file"),
                           (["--prompt-file", str(nul)], "contains a NUL byte"),
                           (["--prompt-file", str(self.home)], "cannot read the prompt file")):
            with self.subTest(args=args):
                rc, _, err = self.run_cli("start", "ag", "--headless", *args)
                self.assertEqual(rc, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(text, err)
        self.assertFalse((self.home / "state" / "ag").exists())


if __name__ == "__main__":
    unittest.main()
