"""The dispatcher, in one process (real store, fake Gitea over HTTP, fake runners that behave
like the CLI), on runs that ended before they had a bottle: a trusted comment launches a run
whose start failed again, with its launch prompt and the comment; never while the failed
start is still in flight; and a bottle made for a run stopped while `starting` is frozen, so
its agent really stops."""

from __future__ import annotations

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.runner import RunnerError
from bot_bottle.orchestrator.targeting import STOP_COMMAND

from ._fakes import GatedStartRunner
from .test_dispatcher import DispatcherTest

CLONE_FAILED = "could not clone acme/widgets: fatal: unable to access: HTTP 502"


def moves(store, run_id: int) -> list[str]:
    return [e.detail["to"] for e in store.op_log(run_id) if e.kind == "transition"]


class RelaunchAfterFailureTest(DispatcherTest):
    def ours(self, n: int) -> list[str]:
        return [c for c in self.issue_comments(n) if "Could not run the agent" in c]

    def test_a_trusted_comment_relaunches_a_run_whose_start_failed_before_it_had_a_bottle(
            self) -> None:
        self.runner.fail_with = RunnerError(CLONE_FAILED)  # Gitea was briefly down
        n = self.new_issue()
        failed = self.wait_state(n, RunState.FAILED)
        self.assertIsNone(failed.slug)
        self.wait(lambda: self.ours(n))  # queued right after the state change
        [said] = self.ours(n)
        self.assertIn(CLONE_FAILED, said)
        self.assertIn("Comment to retry.", said)

        self.runner.fail_with = None
        self.comment(n, "Please try again.", "mallory")  # read access only: not a prompt
        self.assertIs(self.run_for(n).state, RunState.FAILED)
        self.comment(n, "Gitea is back; please try again.", "alice")
        run = self.wait_state(n, RunState.RUNNING)
        first, second = [c[4] for c in self.runner.calls if c[0] == "start"]
        self.assertIn(f"acme/widgets#{n}: Fix it", first)
        self.assertTrue(second.startswith(first), "the relaunch keeps the issue's prompt")
        self.assertTrue(second.endswith("\n\nGitea is back; please try again."), second)
        self.assertNotIn("Please try again.", second)
        self.assertEqual((run.id, run.slug, run.launch_prompt, run.error),
                         (failed.id, f"acme-widgets-{n}", None, None))
        self.assertEqual(moves(self.store, run.id),
                         ["failed", "queued", "starting", "running"])
        self.assertEqual(len(self.store.list_runs(include_destroyed=True)), 1)
        self.assertEqual(len(self.ours(n)), 1, "nothing failed the second time")

class OneSlotRelaunchTest(DispatcherTest):
    max_concurrent = 1

    def test_a_relaunch_waits_for_a_free_slot_like_any_launch(self) -> None:
        self.runner.fail_with = RunnerError(CLONE_FAILED)
        n = self.new_issue()
        self.wait_state(n, RunState.FAILED)
        self.runner.fail_with = None
        other = self.new_issue(title="Other")  # takes the one slot
        self.wait_state(other, RunState.RUNNING)
        self.comment(n, "Try again.", "alice")
        self.assertIs(self.run_for(n).state, RunState.QUEUED)
        self.comment(other, STOP_COMMAND, "alice")  # frees the slot
        self.wait_state(n, RunState.RUNNING)


class StartInFlightTest(DispatcherTest):
    """A start that hangs before its slug (the CLI waits at a gate), given up on or stopped."""

    def make_runner(self):
        return GatedStartRunner()

    def test_a_stop_while_starting_freezes_the_bottle_its_start_makes_so_the_agent_stops(
            self) -> None:
        n = self.new_issue()
        self.assertTrue(self.runner.entered.wait(5))
        self.comment(n, STOP_COMMAND, "alice")
        self.assertIs(self.run_for(n).state, RunState.FROZEN)
        self.runner.slug_gate.set()  # the start makes its bottle after the stop
        slug = f"acme-widgets-{n}"
        self.wait(lambda: ("freeze", slug) in self.runner.calls)
        for thread in self.threads:
            thread.join(5)
        self.assertFalse(any(t.is_alive() for t in self.threads), "the agent still runs")
        run = self.run_for(n)
        self.assertEqual((run.state, run.slug), (RunState.FROZEN, slug))
        self.assertEqual(self.runner.bottle_states(), {slug: "frozen"})
        self.comment(n, "Go on after all.", "alice")  # the frozen bottle resumes as usual
        self.wait(lambda: self.runner.calls[-1][:3] == ("resume", slug, "Go on after all."))

    def test_a_comment_does_not_relaunch_while_the_start_the_watchdog_gave_up_on_runs(
            self) -> None:
        n = self.new_issue()
        self.assertTrue(self.runner.entered.wait(5))
        self.orch.on_watchdog(self.run_for(n), 1800.0)
        self.assertIs(self.run_for(n).state, RunState.FAILED)
        self.comment(n, "Try again.", "alice")
        self.assertIs(self.run_for(n).state, RunState.FAILED)
        self.assertEqual([c[0] for c in self.runner.calls], ["start"], "no second start")
        self.assertTrue(any("has not ended yet" in c for c in self.issue_comments(n)))

        self.runner.slug_gate.set()  # the hung start makes its bottle after all: frozen
        slug = f"acme-widgets-{n}"
        self.wait(lambda: self.run_for(n).slug == slug and ("freeze", slug) in self.runner.calls)
        for thread in self.threads:
            thread.join(5)
        self.assertIs(self.run_for(n).state, RunState.FAILED)
        self.comment(n, "Now go on.", "alice")  # a failed run with a bottle: resumed
        self.wait(lambda: self.runner.calls[-1][:3] == ("resume", slug, "Now go on."))
        self.assertEqual([c[0] for c in self.runner.calls], ["start", "freeze", "resume"])


if __name__ == "__main__":
    import unittest
    unittest.main()
