"""SubprocessBottleRunner against a fake core CLI: a small script that records argv, env and
what arrived on its stdin, and prints what a test asks for."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import tracemalloc
import unittest
from pathlib import Path

from bot_bottle.orchestrator import egress_log
from bot_bottle.orchestrator.egress_log import EgressRefusals
from bot_bottle.orchestrator.runner import MAX_PROMPT_BYTES, TAIL_LINE, BottleExit, RunnerError, \
    SubprocessBottleRunner
from bot_bottle.orchestrator.views import metrics_text

FAKE_CLI = textwrap.dedent("""
    import json, os, sys
    stdin = sys.stdin.buffer.read().decode() if "--prompt-file" in sys.argv else None
    rec = os.environ["FAKE_RECORD"]
    with open(rec, "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ), "stdin": stdin,
                            "nice": os.nice(0)}) + "\\n")
    mode = os.environ.get("FAKE_MODE", "ok")
    cmd = sys.argv[1]
    if mode == "error":
        print("bot-bottle: error: agent 'nope' not found", file=sys.stderr)
        sys.exit(2)
    if cmd in ("start", "resume"):
        print("bot-bottle: slug=acme-widgets-42", file=sys.stderr, flush=True)
        print("agent chatter", file=sys.stderr)
        if mode == "huge":  # one line far longer than any the runner keeps
            block = b"x" * (1 << 20)
            for _ in range(int(os.environ["FAKE_MIB"])):
                sys.stderr.buffer.write(block)
            sys.stderr.buffer.write(b"\\n")
        for i in range(int(os.environ.get("FAKE_REFUSALS", "0"))):
            print(f"bot-bottle: egress refused: 169.254.169.254:80: link-local address {i}",
                  file=sys.stderr)
        if mode in ("huge", "timeout"):
            print("bot-bottle: timeout: the agent ran past its 30 s limit", file=sys.stderr)
            sys.exit(124)
        sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
    if cmd == "list":
        print(json.dumps([{"slug": "acme-widgets-42", "state": "frozen"}]))
    if cmd == "logs":
        sys.stdout.write(os.environ.get("FAKE_LOG", ""))
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

    def runner(self, nice: int = 0, **env: str) -> SubprocessBottleRunner:
        return SubprocessBottleRunner([sys.executable, str(self.dir / "fake_cli.py")],
                                      {**self.base_env, **env}, timeout=30, nice=nice)

    def test_starts_and_resumes_run_niced_the_short_commands_do_not(self) -> None:
        own = os.nice(0)
        runner = self.runner(nice=7)
        self.start(runner, [])
        runner.resume(slug="acme-widgets-42", prompt="go on",
                      env={"BOT_BOTTLE_FORGE_SOCKET": "/tmp/s.sock",
                           "BOT_BOTTLE_FORGE_RUN_TOKEN": "run-tok"})
        runner.freeze("acme-widgets-42")
        self.assertEqual([(c["argv"][0], c["nice"]) for c in self.calls()],
                         [("start", min(own + 7, 19)), ("resume", min(own + 7, 19)),
                          ("commit", own)])

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def start(self, runner: SubprocessBottleRunner, seen: list[str], prompt: str = "fix it",
              **kw) -> BottleExit:
        return runner.start(agent="claude", bottles=["py"], label="acme-widgets-42",
                            prompt=prompt, on_slug=seen.append,
                            env={"BOT_BOTTLE_FORGE_SOCKET": "/tmp/s.sock",
                                 "BOT_BOTTLE_FORGE_RUN_TOKEN": "run-tok"}, **kw)

    def test_start_reads_slug_and_passes_argv_without_forge_secrets(self) -> None:
        seen: list[str] = []
        result = self.start(self.runner(FAKE_EXIT="7"), seen)
        self.assertEqual(result, BottleExit("acme-widgets-42", 7))
        self.assertEqual(seen, ["acme-widgets-42"])
        call = self.calls()[0]
        self.assertEqual(call["argv"], ["start", "claude", "--headless", "--label", "acme-widgets-42",
                                        "--prompt-file", "-", "--bottle", "py"])
        self.assertEqual(call["stdin"], "fix it")
        self.assertNotIn("FORGE_TOKEN", call["env"])
        self.assertNotIn("FORGE_WEBHOOK_SECRET", call["env"])
        self.assertEqual(call["env"]["BOT_BOTTLE_FORGE_RUN_TOKEN"], "run-tok")

    def test_the_prompt_travels_on_stdin_verbatim_whatever_it_looks_like(self) -> None:
        big = "é" * 100_000  # 200 KB: more than one argv string may hold
        prompts = ["-x", "--help", "- a bullet\n- another", "@/etc/passwd", big]
        for prompt in prompts:
            self.start(self.runner(), [], prompt=prompt)
        self.assertEqual([c["stdin"] for c in self.calls()], prompts)
        for call in self.calls():
            self.assertFalse(set(prompts) & set(call["argv"]), "the prompt is never in argv")

    def test_a_workspace_is_handed_to_start_as_an_absolute_path(self) -> None:
        self.start(self.runner(), [], workspace="/home/b/checkouts/acme-widgets-42")
        self.assertEqual(self.calls()[0]["argv"][-2:],
                         ["--workspace", "/home/b/checkouts/acme-widgets-42"])
        for bad in ("relative/dir", "--help", ""):
            with self.subTest(workspace=bad), self.assertRaises(RunnerError):
                self.start(self.runner(), [], workspace=bad)
        self.assertEqual(len(self.calls()), 1)

    def test_the_timeout_line_marks_the_exit_as_timed_out_with_its_limit(self) -> None:
        result = self.start(self.runner(FAKE_MODE="timeout"), [])
        self.assertEqual(result, BottleExit("acme-widgets-42", 124, timed_out=True, limit=30))

    def test_an_endless_line_from_the_cli_is_read_in_bounded_memory(self) -> None:
        runner = self.runner(FAKE_MODE="huge", FAKE_MIB="32")
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        result = self.start(runner, [])
        _, peak = tracemalloc.get_traced_memory()
        self.assertTrue(result.timed_out, "the line after the long one was still read")
        self.assertLess(peak, 2 * 1024 * 1024, "a 32 MiB line was held in memory")

    def refusing_runner(self, count: int) -> SubprocessBottleRunner:
        where = {"run-tok": "repo=acme/widgets issue=42 run=7"}
        refusals = EgressRefusals(where.get)
        return SubprocessBottleRunner([sys.executable, str(self.dir / "fake_cli.py")],
                                      {**self.base_env, "FAKE_REFUSALS": str(count)}, timeout=30,
                                      refusals=refusals)

    def test_egress_refusals_are_logged_with_the_run_and_counted_for_metrics(self) -> None:
        runner = self.refusing_runner(3)
        with self.assertLogs(egress_log.log, "WARNING") as logs:
            result = self.start(runner, [])
        self.assertEqual(result, BottleExit("acme-widgets-42", 0))
        self.assertEqual(len(logs.records), 3)
        for i, record in enumerate(logs.records):
            self.assertEqual(record.getMessage(),
                             f"egress refused: 169.254.169.254:80: link-local address {i} "
                             "repo=acme/widgets issue=42 run=7 slug=acme-widgets-42")
        self.assertEqual(runner.refusals.total, 3)
        text = metrics_text({}, {}, counters=runner.refusals.counters())
        self.assertIn("# TYPE bot_bottle_egress_refused_total counter\n", text)
        self.assertIn("\nbot_bottle_egress_refused_total 3\n", text)

    def test_a_flood_of_egress_refusals_logs_a_bounded_number_of_lines_in_bounded_memory(self) -> None:
        count = 20000
        runner = self.refusing_runner(count)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        with self.assertLogs(egress_log.log, "WARNING") as logs:
            self.start(runner, [])
        _, peak = tracemalloc.get_traced_memory()
        self.assertEqual(runner.refusals.total, count)
        self.assertEqual(len(logs.records), egress_log.LOG_LIMIT + 1)
        self.assertEqual(logs.records[-1].getMessage(),
                         f"egress refused {count - egress_log.LOG_LIMIT} more times (not logged "
                         "one by one) repo=acme/widgets issue=42 run=7 slug=acme-widgets-42")
        self.assertLess(peak, 1024 * 1024, "the refusal lines were kept")

    def test_a_refusal_of_a_run_the_store_does_not_know_is_still_logged_and_counted(self) -> None:
        runner = self.refusing_runner(1)
        with self.assertLogs(egress_log.log, "WARNING") as logs:
            runner.start(agent="claude", bottles=[], label="x", prompt="p",
                         on_slug=lambda slug: None, env={"BOT_BOTTLE_FORGE_RUN_TOKEN": "unknown"})
        self.assertIn("repo=- issue=- run=- slug=acme-widgets-42", logs.output[0])
        self.assertEqual(runner.refusals.total, 1)

    def test_log_tail_runs_logs_with_tail_and_cuts_long_lines(self) -> None:
        log = "".join(f"line {i}\n" for i in range(30)) + "y" * (TAIL_LINE * 3) + "\nlast\n"
        tail = self.runner(FAKE_LOG=log).log_tail("acme-widgets-42", 3)
        self.assertEqual(self.calls()[0]["argv"], ["logs", "acme-widgets-42", "--tail", "3"])
        self.assertEqual(tail.splitlines(), ["line 29", "y" * TAIL_LINE, "last"])
        with self.assertRaisesRegex(RunnerError, "logs failed: agent 'nope' not found"):
            self.runner(FAKE_MODE="error").log_tail("acme-widgets-42", 3)
        with self.assertRaises(RunnerError):
            self.runner().log_tail("../etc", 3)

    def test_a_cli_that_cannot_be_started_is_a_runner_error(self) -> None:
        missing = SubprocessBottleRunner([str(self.dir / "no-such-cli")], self.base_env)
        with self.assertRaisesRegex(RunnerError, "cannot run bot-bottle start"):
            self.start(missing, [])
        with self.assertRaisesRegex(RunnerError, "cannot run bot-bottle commit"):
            missing.freeze("acme-widgets-42")

    def test_prompts_over_the_bound_or_with_nul_are_refused_before_spawning(self) -> None:
        runner = self.runner()
        env = {"BOT_BOTTLE_FORGE_SOCKET": "/s", "BOT_BOTTLE_FORGE_RUN_TOKEN": "t"}
        with self.assertRaisesRegex(RunnerError, "at most 1048576 .1 MiB"):
            runner.start(agent="claude", bottles=[], label="l", prompt="x" * (MAX_PROMPT_BYTES + 1),
                         env=env, on_slug=lambda s: None)
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
            ["resume", "acme-widgets-42", "--headless", "--prompt-file", "-"],
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
