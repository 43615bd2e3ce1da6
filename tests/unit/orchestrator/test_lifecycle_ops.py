"""`decide` on what the executor's workers report and on what is under way for a run
(`InFlight`), table-driven: a bottle operation's end (`OpSucceeded`, `OpFailed`), a resume
beginning, and the events that meet a freeze or a start in flight."""

from __future__ import annotations

import unittest

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator.model import ALLOWED_TRANSITIONS, RunState

from .test_decide import SLUG, run

S = RunState
FREEZING = L.InFlight(freezing=True)
STARTING = L.InFlight(starting=True)
FREEZE_FAILED = ("Could not freeze the bottle (3 attempts): bot-bottle commit failed: "
                 "cannot read /workspace/x\n\nThe run failed.")
NOT_ENDED = ("The earlier start of this run has not ended yet, so it is not started again "
             "now. Comment again later to retry.")

CASES = [
    # (name, run, event, in flight, expected actions)
    ("a freeze that ended moves the working run to frozen", run(S.RUNNING),
     L.OpSucceeded(L.Freeze()), L.IDLE, [L.MarkFrozen(S.FROZEN)]),
    ("a freeze for the watchdog ends timed out", run(S.RUNNING),
     L.OpSucceeded(L.Freeze(S.TIMED_OUT)), L.IDLE, [L.MarkFrozen(S.TIMED_OUT)]),
    ("timed out follows only running: a resuming run ends frozen", run(S.RESUMING),
     L.OpSucceeded(L.Freeze(S.TIMED_OUT)), L.IDLE, [L.MarkFrozen(S.FROZEN)]),
    ("a comment remembered while it froze resumes it right after",
     run(S.RUNNING, pending_prompt="also add tests"), L.OpSucceeded(L.Freeze()), L.IDLE,
     [L.MarkFrozen(S.FROZEN), L.Resume("also add tests")]),
    ("a freeze that failed every attempt fails the run and says why", run(S.RUNNING),
     L.OpFailed(L.Freeze(), "bot-bottle commit failed: cannot read /workspace/x", 3), L.IDLE,
     [L.MarkFailed("could not freeze the bottle (3 attempts): bot-bottle commit failed: "
                   "cannot read /workspace/x"), L.Comment(42, FREEZE_FAILED)]),
    ("a bottle frozen after a stop that could not be frozen is said on the issue",
     run(S.FROZEN), L.OpFailed(L.FreezeBottle(SLUG), "boom", 1), L.IDLE,
     [L.Comment(42, f"Could not freeze the bottle `{SLUG}` that the run's start made after "
                    "it was stopped (1 attempt): boom")]),
    ("a bottle that could not be removed tells the operator how",
     run(S.DESTROYED), L.OpFailed(L.DestroyBottle(SLUG), "busy", 3), L.IDLE,
     [L.Comment(42, f"Could not remove the bottle `{SLUG}` of this run (3 attempts): busy\n\n"
                    f"An operator can remove it with `bot-bottle destroy {SLUG}`.")]),
    ("a PR that could not be opened is said on the issue", run(S.FROZEN),
     L.OpFailed(L.OpenPr(), "store locked", 3), L.IDLE,
     [L.Comment(42, "Could not open a pull request for the agent's branch (3 attempts): "
                    "store locked")]),
    ("a resume that begins makes the run running", run(S.RESUMING), L.AgentResumed(), L.IDLE,
     [L.Started(SLUG)]),
    ("a done while a freeze is under way records and comments, no second freeze",
     run(S.RUNNING, pr_number=43), L.DoneSignal("done", "ok"), FREEZING,
     [L.RecordDone("done", "ok"), L.Comment(43, "Agent finished with status **done**:\n\nok")]),
    ("a close by a non-writer during a freeze keeps the run without a second freeze",
     run(S.RUNNING), L.IssueClosed(by_writer=False, closer="mallory"), FREEZING,
     [L.RecordDone("kept", "closed by mallory, who lacks write access"),
      L.Comment(42, "This issue was closed by @mallory, who lacks write access to the "
                    "repository, so run 1 was kept (frozen, not destroyed). Someone with write "
                    "access can close the issue again to destroy it.")]),
    ("a comment during a freeze is remembered for after it", run(S.RUNNING),
     L.TrustedComment("more"), FREEZING, [L.RememberPrompt("more")]),
    ("a stop while starting without a bottle is frozen at once", run(S.STARTING, slug=None),
     L.StopRequested(), L.IDLE,
     [L.MarkFrozen(S.FROZEN), L.RecordDone("stopped", "stopped by /bot-bottle stop"),
      L.Comment(42, "Stopped and frozen on request.")]),
    ("the exit of the process running now is decided as an exit", run(S.RUNNING),
     L.BottleExited(0, process=2), L.InFlight(process=2),
     [L.Freeze(), L.RecordDone("exited:0", ""),
      L.Comment(42, "The agent exited (code 0) without signalling done; the bottle is frozen. "
                    "Comment to resume it.")]),
    ("a relaunch while the failed start still runs is refused on the issue",
     run(S.FAILED, slug=None, launch_prompt="LP"), L.TrustedComment("again"), STARTING,
     [L.Comment(42, NOT_ENDED)]),
]

IGNORED = [
    ("the exit a freeze caused waits for the freeze's end", run(S.RUNNING), L.BottleExited(0),
     FREEZING),
    ("a wall-time exit during a freeze", run(S.RUNNING), L.BottleExited(124, timed_out=True),
     FREEZING),
    ("the watchdog during a freeze", run(S.RUNNING), L.WatchdogExpired(99.0), FREEZING),
    ("a stop during a freeze", run(S.RUNNING), L.StopRequested(), FREEZING),
    ("a restart finding a run its done signal is freezing", run(S.RUNNING), L.Restarted(SLUG),
     FREEZING),
    ("a freeze that ended after the run was destroyed", run(S.DESTROYED),
     L.OpSucceeded(L.Freeze()), L.IDLE),
    ("a freeze that failed after the run was destroyed", run(S.DESTROYED),
     L.OpFailed(L.Freeze(), "x", 3), L.IDLE),
    ("a freeze that failed for a run the watchdog failed meanwhile", run(S.FAILED),
     L.OpFailed(L.Freeze(), "x", 3), L.IDLE),
    ("a freeze that ended for a run no longer working", run(S.FAILED),
     L.OpSucceeded(L.Freeze()), L.IDLE),
    ("a destroy that ended", run(S.DESTROYED), L.OpSucceeded(L.DestroyBottle(SLUG)), L.IDLE),
    ("a PR opening that ended", run(S.FROZEN), L.OpSucceeded(L.OpenPr()), L.IDLE),
    ("a resume beginning for a run closed meanwhile", run(S.DESTROYED), L.AgentResumed(),
     L.IDLE),
    ("a resume beginning for a frozen run", run(S.FROZEN), L.AgentResumed(), L.IDLE),
    ("the late exit of a start whose bottle was frozen and resumed", run(S.RUNNING),
     L.BottleExited(0, process=1), L.InFlight(process=2)),
    ("the late failure of a start whose bottle was frozen and resumed", run(S.RESUMING),
     L.RunnerFailed("boom", process=1), L.InFlight(process=2)),
]


class DecideInFlightTest(unittest.TestCase):
    def test_each_event_yields_the_expected_actions(self) -> None:
        for name, current, event, busy, expected in CASES:
            with self.subTest(name):
                self.assertEqual(L.decide(current, event, busy), expected)

    def test_events_that_do_not_apply_are_ignored_with_a_reason(self) -> None:
        for name, current, event, busy in IGNORED:
            with self.subTest(name):
                [action] = L.decide(current, event, busy)
                self.assertIsInstance(action, L.Ignore)
                self.assertTrue(action.reason)

    def test_every_state_a_worker_event_leads_to_is_an_allowed_transition(self) -> None:
        targets = {L.MarkFailed: S.FAILED, L.Started: S.RUNNING, L.Resume: S.RESUMING}
        for name, current, event, busy, expected in CASES:
            state = current.state
            for action in expected:
                target = (action.state if isinstance(action, L.MarkFrozen)
                          else targets.get(type(action)))
                if target is None:
                    continue
                with self.subTest(name, action=action):
                    self.assertIn(target, ALLOWED_TRANSITIONS[state])
                state = target

    def test_a_freeze_is_never_asked_twice_while_one_is_under_way(self) -> None:
        for state in (S.STARTING, S.RUNNING, S.RESUMING):
            for event in (L.DoneSignal("done", ""), L.StopRequested(), L.BottleExited(1),
                          L.WatchdogExpired(5.0), L.IssueClosed(closer="m"),
                          L.Restarted(SLUG)):
                with self.subTest(state=state.value, event=event):
                    actions = L.decide(run(state), event, FREEZING)
                    self.assertFalse(any(isinstance(a, (L.Freeze, L.MarkFrozen))
                                         for a in actions), actions)

    def test_only_decide_s_bottle_operations_go_to_the_pool(self) -> None:
        self.assertEqual(set(L.BOTTLE_OPS), {L.Freeze, L.FreezeBottle, L.DestroyBottle,
                                             L.OpenPr})


if __name__ == "__main__":
    unittest.main()
