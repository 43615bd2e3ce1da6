"""The lifecycle executor with a real store on a temp file, FakeBottleRunner and FakeForge;
bottle runs are executed synchronously through an injected `spawn`."""

from __future__ import annotations

import unittest

from bot_bottle.contrib.forge.base import ForgeUnavailable
from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import outbox
from bot_bottle.orchestrator.executor import Executor
from bot_bottle.orchestrator.prompts import launch_prompt
from bot_bottle.orchestrator.model import OrchestratorError, RunState
from bot_bottle.orchestrator.runner import RunnerError
from tests.support.fake_forge import FakeForge

from ._fakes import FakeBottleRunner, FakeClock, temp_store

MARKER = "<!-- bot-bottle -->"


class ExecutorTest(unittest.TestCase):
    def setUp(self) -> None:
        self.store = temp_store(self)
        self.runner = FakeBottleRunner()
        self.clock = FakeClock()
        self.forge = FakeForge("acme", "widgets")
        self.issue = self.forge.add_issue("Fix it", "details", user="alice")
        self.ex = Executor(self.store, self.runner, sidecar_socket="/s.sock", marker=MARKER,
                           clock=self.clock.now, spawn=lambda fn: fn())

    def drain(self, forge_factory, now: float, backoff: float = 30.0) -> int:
        return outbox.drain(self.store, forge_factory, now, backoff)

    def launch(self):
        action = L.decide(None, L.LaunchRequested("claude", ("py",), True))[0]
        return self.ex.create("acme", "widgets", self.issue, action, launch_prompt("Fix it", "details"))

    def test_launch_starts_the_bottle_with_the_prompt_and_only_run_env(self) -> None:
        run = self.launch()
        call = self.runner.calls[0]
        self.assertEqual(call[:4], ("start", "claude", ("py",), f"acme-widgets-{self.issue}"))
        self.assertIn("POST /done", call[4])
        self.assertEqual(set(call[5]), {"BOT_BOTTLE_FORGE_SOCKET", "BOT_BOTTLE_FORGE_RUN_TOKEN"})
        self.assertEqual(call[5]["BOT_BOTTLE_FORGE_RUN_TOKEN"], self.store.get_run(run.id).run_token)
        # the fake agent exits 0 without a done signal: frozen with the exit status
        final = self.store.get_run(run.id)
        self.assertEqual((final.state, final.last_done_status), (RunState.FROZEN, "exited:0"))

    def test_done_then_trusted_comment_then_pr_closed_runs_the_whole_cycle(self) -> None:
        run = self.launch()
        run = self.ex.event(run.id, L.DoneSignal("done", "opened PR"))  # late done on frozen run
        self.assertEqual(run.last_done_status, "done")
        run = self.ex.event(run.id, L.TrustedComment("rename it"))
        self.assertEqual(self.runner.calls[-2][:3], ("resume", run.slug, "rename it"))
        self.assertEqual(self.store.get_run(run.id).state, RunState.FROZEN)
        run = self.ex.event(run.id, L.PrClosed(merged=True))
        self.assertEqual(run.state, RunState.DESTROYED)
        self.assertEqual(self.runner.calls[-1], ("destroy", run.slug))

    def test_launch_failure_marks_failed_and_comments_why_with_the_marker(self) -> None:
        self.runner.fail_with = RunnerError("agent 'claude' not found")
        run = self.launch()
        self.assertEqual(self.store.get_run(run.id).state, RunState.FAILED)
        self.assertEqual(self.drain(lambda o, r: self.forge, self.clock.now()), 1)
        bodies = [c.body for c in self.forge.read_comments(self.issue)]
        self.assertTrue(any("agent 'claude' not found" in b and MARKER in b for b in bodies))

    def test_actions_that_make_a_run_are_refused_for_an_existing_run(self) -> None:
        run = self.store.get_run(self.launch().id)
        for action in (L.Launch("claude", ()), L.Queue("claude", ())):
            with self.subTest(action=action), self.assertRaises(OrchestratorError):
                self.ex.apply(run, [action])
        self.assertEqual(self.store.get_run(run.id), run, "nothing changed")

    def test_outbox_keeps_comments_while_the_forge_is_down(self) -> None:
        run = self.launch()
        self.ex.apply(self.store.get_run(run.id), [L.Comment(self.issue, "hello")])

        class Down:
            def post_comment(self, number, body):
                raise ForgeUnavailable("502")
        now = self.clock.now()
        self.assertEqual(self.drain(lambda o, r: Down(), now), 0)
        self.assertEqual(self.drain(lambda o, r: self.forge, now), 0)  # backing off
        self.assertEqual(self.drain(lambda o, r: self.forge, now + 31), 2)

    def test_outbox_backs_off_exponentially_and_drops_what_the_forge_will_never_take(self) -> None:
        run = self.launch()
        now = self.clock.now()
        self.drain(lambda o, r: self.forge, now)  # what the launch itself said
        self.ex.apply(self.store.get_run(run.id), [L.Comment(self.issue, "hello")])

        class Down:
            def post_comment(self, number, body):
                raise ForgeUnavailable("502")
        self.drain(lambda o, r: Down(), now, backoff=10)  # 1st failure: +10 s
        self.drain(lambda o, r: Down(), now + 10, backoff=10)  # 2nd: +20 s
        self.assertEqual(self.drain(lambda o, r: self.forge, now + 29, backoff=10), 0)
        self.assertEqual(self.drain(lambda o, r: self.forge, now + 30, backoff=10), 1)

        self.ex.apply(self.store.get_run(run.id), [L.Comment(999, "on an issue that is gone")])
        self.assertEqual(self.drain(lambda o, r: self.forge, now + 31), 0)
        self.assertEqual(self.store.due_outbox(now + 10_000), [], "dropped, never retried")


    def test_a_comment_whose_post_timed_out_after_landing_is_not_posted_twice(self) -> None:
        run = self.launch()
        now = self.clock.now()
        self.drain(lambda o, r: self.forge, now)  # what the launch itself said
        self.ex.apply(self.store.get_run(run.id), [L.Comment(self.issue, "exactly once")])
        forge = self.forge

        class LandsThenTimesOut:
            def read_comments(self, number):
                return forge.read_comments(number)

            def post_comment(self, number, body):
                forge.post_comment(number, body)
                raise ForgeUnavailable("timed out")
        self.assertEqual(self.drain(lambda o, r: LandsThenTimesOut(), now), 0)
        self.assertEqual(self.drain(lambda o, r: self.forge, now + 31), 1)
        self.assertEqual(self.store.due_outbox(now + 10_000), [])
        bodies = [c.body for c in self.forge.read_comments(self.issue)]
        self.assertEqual(sum("exactly once" in b for b in bodies), 1, bodies)

    def test_a_crash_between_posting_and_recording_does_not_post_twice(self) -> None:
        run = self.launch()
        now = self.clock.now()
        self.drain(lambda o, r: self.forge, now)
        self.ex.apply(self.store.get_run(run.id), [L.Comment(self.issue, "once more")])
        item = self.store.due_outbox(now)[0]
        self.store.mark_outbox_posting(item.id, now)  # the process dies right after the POST
        self.forge.post_comment(self.issue, f"{item.body}\n<!-- bot-bottle:outbox={item.id} -->")
        self.assertEqual(self.drain(lambda o, r: self.forge, now), 1)
        bodies = [c.body for c in self.forge.read_comments(self.issue)]
        self.assertEqual(sum("once more" in b for b in bodies), 1, bodies)


if __name__ == "__main__":
    unittest.main()
