"""Failures are visible: the executor quotes the bottle log's last lines in its exit and
failure comments, with the orchestrator's secrets (run token, FORGE_TOKEN, webhook secret)
redacted on our side, and a wall-time stop ends the run `timed_out`. Real store, fake runner
and forge; `log_tail.clean`/`quote` on their own."""

from __future__ import annotations

import unittest

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import log_tail
from bot_bottle.orchestrator import outbox
from bot_bottle.orchestrator.executor import Executor
from bot_bottle.orchestrator.prompts import launch_prompt
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.runner import BottleExit, RunnerError
from tests.support.fake_forge import FakeForge

from ._fakes import FakeBottleRunner, FakeClock, temp_store

FORGE_TOKEN = "forge-token-0a1b2c3d"
WEBHOOK_SECRET = "hook-secret-9z8y"


class ScriptedExitRunner(FakeBottleRunner):
    """`start` ends the way `exit` says; `resume` raises `resume_error` when set."""

    def __init__(self, exit: BottleExit | None = None) -> None:
        super().__init__()
        self.exit = exit
        self.resume_error: Exception | None = None

    def start(self, **kw) -> BottleExit:
        result = super().start(**kw)
        return self.exit or result

    def resume(self, **kw) -> BottleExit:
        if self.resume_error is not None:
            raise self.resume_error
        return super().resume(**kw)


class ExitCommentTest(unittest.TestCase):
    def setUp(self) -> None:
        self.store = temp_store(self)
        self.clock = FakeClock()
        self.forge = FakeForge("acme", "widgets")
        self.issue = self.forge.add_issue("Fix it", "details", user="alice")

    def executor(self, runner) -> Executor:
        return Executor(self.store, runner, sidecar_socket="/s.sock", marker="<!-- m -->",
                        clock=self.clock.now, spawn=lambda fn: fn(),
                        secret_values=(FORGE_TOKEN, WEBHOOK_SECRET))

    def launch(self, ex: Executor):
        action = L.decide(None, L.LaunchRequested("claude", (), True))[0]
        return ex.create("acme", "widgets", self.issue, action, launch_prompt("Fix it", "details"))

    def comments(self, ex: Executor) -> list[str]:
        outbox.drain(self.store, lambda o, r: self.forge, self.clock.now())
        return [c.body for c in self.forge.read_comments(self.issue)]

    def test_an_exit_comment_quotes_the_log_tail_with_our_secrets_redacted(self) -> None:
        runner = ScriptedExitRunner(BottleExit(f"acme-widgets-{self.issue}", 1))
        ex = self.executor(runner)
        slug = f"acme-widgets-{self.issue}"

        def log_for(slug_, lines):  # what `bot-bottle logs` would print: our secrets in it
            token = self.store.list_runs()[0].run_token
            return "\n".join([f"noise {i}" for i in range(40)] + [
                f"auth with {token}", f"Authorization: token {FORGE_TOKEN}",
                f"secret={WEBHOOK_SECRET}", "\x1b[31mError: model refused\x1b[0m"])
        runner.log_tail = log_for
        run = self.launch(ex)
        run_token = self.store.get_run(run.id).run_token
        self.assertEqual(self.store.get_run(run.id).slug, slug)
        [body] = self.comments(ex)
        self.assertIn("The agent exited (code 1) without signalling done", body)
        self.assertIn("```\n", body)
        self.assertIn("Error: model refused\n```", body)
        self.assertIn("Authorization: token ***", body)
        for secret in (run_token, FORGE_TOKEN, WEBHOOK_SECRET, "\x1b["):
            self.assertNotIn(secret, body)
        quoted = body.split("```\n", 1)[1].rsplit("\n```", 1)[0].splitlines()
        self.assertEqual(len(quoted), log_tail.LINES)

    def test_a_wall_time_stop_ends_the_run_timed_out_and_says_so(self) -> None:
        runner = ScriptedExitRunner(BottleExit(f"acme-widgets-{self.issue}", 124, timed_out=True,
                                               limit=900))
        runner.logs[f"acme-widgets-{self.issue}"] = "thinking...\nstill thinking..."
        ex = self.executor(runner)
        run = self.store.get_run(self.launch(ex).id)
        self.assertEqual((run.state, run.last_done_status), (RunState.TIMED_OUT, "timed_out"))
        [body] = self.comments(ex)
        self.assertTrue(body.startswith("Stopped: the agent ran past its 900 s wall-time limit; "
                                        "the bottle is frozen. Comment to resume it."), body)
        self.assertIn("```\nthinking...\nstill thinking...\n```", body)
        ex.event(run.id, L.TrustedComment("go on"))
        self.assertEqual([c[:3] for c in runner.calls if c[0] == "resume"],
                         [("resume", run.slug, "go on")])

    def test_a_failed_resume_quotes_the_log_and_a_missing_log_costs_nothing(self) -> None:
        runner = ScriptedExitRunner()
        ex = self.executor(runner)
        run = self.launch(ex)
        self.comments(ex)  # the first exit's comment (no log: none quoted)
        runner.resume_error = RunnerError(f"bottle is running ({FORGE_TOKEN})")
        runner.logs[run.slug if run.slug else f"acme-widgets-{self.issue}"] = "last words"
        ex.event(run.id, L.TrustedComment("again"))
        self.assertEqual(self.store.get_run(run.id).state, RunState.FAILED)
        body = self.comments(ex)[-1]
        self.assertTrue(body.startswith("Could not run the agent: bottle is running (***)"), body)
        self.assertIn("```\nlast words\n```", body)
        self.assertNotIn("Last lines", self.comments(ex)[0])

    def test_a_log_that_cannot_be_read_still_reports_the_exit(self) -> None:
        runner = ScriptedExitRunner(BottleExit(f"acme-widgets-{self.issue}", 3))

        def broken(slug, lines):
            raise RunnerError("bot-bottle logs failed: no bottle")
        runner.log_tail = broken
        ex = self.executor(runner)
        self.launch(ex)
        [body] = self.comments(ex)
        self.assertTrue(body.startswith("The agent exited (code 3) without signalling done"))
        self.assertNotIn("```", body)


class LogTailTest(unittest.TestCase):
    def test_printable_cuts_and_shows_what_cannot_be_printed_as_a_question_mark(self) -> None:
        self.assertEqual(log_tail.printable("plain text", 5), "plain")
        self.assertEqual(log_tail.printable("a\x1b[31mb\nc\u2028d"), "a?[31mb?c?d")
        self.assertEqual(log_tail.printable("x" * 10), "x" * 10)

    def test_clean_keeps_the_last_lines_each_cut_and_control_sequences_dropped(self) -> None:
        text = "\n".join(["old"] * 5 + ["a" * 500, "\x1b[1mbold\x1b[0m\r", "", ""])
        self.assertEqual(log_tail.clean(text, (), lines=2, width=10).splitlines(),
                         ["a" * 10 + " […]", "bold"])

    def test_a_secret_is_redacted_even_where_the_width_would_cut_it(self) -> None:
        secret = "s" * 40
        cleaned = log_tail.clean("x" * 280 + secret, (secret,), width=300)
        self.assertNotIn("ssss", cleaned)
        self.assertTrue(cleaned.endswith("***"))

    def test_short_values_are_not_treated_as_secrets(self) -> None:
        self.assertEqual(log_tail.clean("a b c", ("a", "")), "a b c")

    def test_quote_uses_a_fence_no_line_of_the_log_can_close(self) -> None:
        quoted = log_tail.quote("```\nrm -rf\n````")
        self.assertTrue(quoted.startswith("`````\n") and quoted.endswith("\n`````"), quoted)
        self.assertEqual(log_tail.quote(""), "")


if __name__ == "__main__":
    unittest.main()
