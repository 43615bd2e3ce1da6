"""The pure lifecycle core: `decide(run, event)` checked table-driven, no fakes needed."""

from __future__ import annotations

import unittest

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator.model import ALLOWED_TRANSITIONS, RunRecord, RunState

S = RunState


def run(state: RunState, **fields) -> RunRecord:
    base = dict(id=1, owner="acme", repo="widgets", issue_number=42, agent="claude",
                bottles=("py",), state=state, created_at=0.0, updated_at=0.0, slug="acme-widgets-42")
    base.update(fields)
    return RunRecord(**base)


DONE_BODY = "Agent finished with status **done**:\n\nopened PR"
LOG = "Error: 401 Unauthorized\nretrying"
QUOTED_LOG = "\n\nLast lines of the bottle's log:\n\n```\nError: 401 Unauthorized\nretrying\n```"
TIMED_OUT = "the agent ran past its 900 s wall-time limit"
SLUG = "acme-widgets-42"
INTERRUPTED = [L.Freeze(), L.RecordDone("interrupted", ""),
               L.Comment(42, "The orchestrator restarted while the agent worked; the bottle is "
                             "frozen. Comment to resume it.")]
NO_BOTTLE = "The orchestrator restarted and found no bottle for this run; the run failed."
RETRY = "\n\nComment to retry."
RELAUNCH_PROMPT = ("LP\n\n---\nAn earlier start of this run ended before the agent ran. A comment "
                   "on the issue asked to retry:\n\nGitea is back, try again")

KEPT = ("This issue was closed by @mallory, who lacks write access to the repository, so "
        "run 1 was kept (frozen, not destroyed). Someone with write access can close the "
        "issue again to destroy it.")

CASES = [
    ("new issue with a free slot is launched", None,
     L.LaunchRequested("claude", ("py",), True), [L.Launch("claude", ("py",))]),
    ("new issue without a free slot is queued", None,
     L.LaunchRequested("claude", (), False), [L.Queue("claude", ())]),
    ("queued run takes a freed slot", run(S.QUEUED, slug=None), L.SlotAvailable(), [L.StartQueued()]),
    ("done while running freezes records and comments on the PR", run(S.RUNNING, pr_number=43),
     L.DoneSignal("done", "opened PR"),
     [L.Freeze(), L.RecordDone("done", "opened PR"), L.Comment(43, DONE_BODY)]),
    ("done with a pending prompt freezes first (the freeze's end resumes it)",
     run(S.RUNNING, pending_prompt="also add tests"), L.DoneSignal("done", "opened PR"),
     [L.Freeze(), L.RecordDone("done", "opened PR"), L.OpenPr(), L.Comment(42, DONE_BODY)]),
    ("late done for an already frozen run records without refreezing", run(S.FROZEN),
     L.DoneSignal("done", "opened PR"),
     [L.RecordDone("done", "opened PR"), L.OpenPr(), L.Comment(42, DONE_BODY)]),
    ("done without a PR opens one from the pushed branch, then comments on the issue",
     run(S.RUNNING), L.DoneSignal("done", "opened PR"),
     [L.Freeze(), L.RecordDone("done", "opened PR"), L.OpenPr(), L.Comment(42, DONE_BODY)]),
    ("a second done of a run whose PR the service opened opens no other",
     run(S.FROZEN, pr_number=43), L.DoneSignal("done", "opened PR"),
     [L.RecordDone("done", "opened PR"), L.Comment(43, DONE_BODY)]),
    ("blocked without a PR opens none", run(S.RUNNING), L.DoneSignal("blocked", "need a key"),
     [L.Freeze(), L.RecordDone("blocked", "need a key"),
      L.Comment(42, "Agent finished with status **blocked**:\n\nneed a key")]),
    ("failed without a PR opens none", run(S.FROZEN), L.DoneSignal("failed", "tests broke"),
     [L.RecordDone("failed", "tests broke"),
      L.Comment(42, "Agent finished with status **failed**:\n\ntests broke")]),
    ("trusted comment on a frozen run resumes with it as prompt", run(S.FROZEN),
     L.TrustedComment("please rename"), [L.Resume("please rename")]),
    ("trusted comment on a timed out run resumes it", run(S.TIMED_OUT),
     L.TrustedComment("go on"), [L.Resume("go on")]),
    ("trusted comment while running is remembered", run(S.RUNNING),
     L.TrustedComment("later"), [L.RememberPrompt("later")]),
    ("stop while running freezes", run(S.RUNNING), L.StopRequested(),
     [L.Freeze(), L.RecordDone("stopped", "stopped by /bot-bottle stop"),
      L.Comment(42, "Stopped and frozen on request.")]),
    ("merged or closed PR destroys", run(S.FROZEN, pr_number=43), L.PrClosed(merged=True),
     [L.Destroy(), L.DestroyBottle(SLUG)]),
    ("issue closed without PR by a writer destroys", run(S.FROZEN),
     L.IssueClosed(by_writer=True, closer="alice"), [L.Destroy(), L.DestroyBottle(SLUG)]),
    ("issue closed by a writer while running destroys", run(S.RUNNING),
     L.IssueClosed(by_writer=True, closer="alice"), [L.Destroy(), L.DestroyBottle(SLUG)]),
    ("a run without a bottle is destroyed with nothing to remove", run(S.QUEUED, slug=None),
     L.IssueClosed(by_writer=True, closer="alice"), [L.Destroy()]),
    ("issue closed by someone without write access freezes a working run and says so",
     run(S.RUNNING), L.IssueClosed(by_writer=False, closer="mallory"),
     [L.Freeze(), L.RecordDone("kept", "closed by mallory, who lacks write access"),
      L.Comment(42, KEPT)]),
    ("issue closed by someone without write access leaves a frozen run as is",
     run(S.FROZEN), L.IssueClosed(by_writer=False, closer="mallory"), [L.Comment(42, KEPT)]),
    ("issue closed by someone without write access leaves a queued run as is",
     run(S.QUEUED, slug=None), L.IssueClosed(by_writer=False, closer="mallory"),
     [L.Comment(42, KEPT)]),
    ("an issue close event without the closer's access is taken as no write access",
     run(S.FROZEN), L.IssueClosed(), [L.Comment(42, KEPT.replace("@mallory", "someone"))]),
    ("watchdog on a running run times it out and comments", run(S.RUNNING),
     L.WatchdogExpired(1800.0),
     [L.Freeze(S.TIMED_OUT), L.Comment(42, "No progress for 1800 s: the bottle was stopped and "
                                       "frozen. Comment to resume it.")]),
    ("watchdog on a run that never got a bottle fails it", run(S.STARTING, slug=None),
     L.WatchdogExpired(1800.0),
     [L.MarkFailed("the bottle did not start within 1800 s"),
      L.Comment(42, "the bottle did not start within 1800 s; the run failed.")]),
    ("watchdog on a resume that hangs freezes the bottle", run(S.RESUMING, pr_number=43),
     L.WatchdogExpired(600.0),
     [L.Freeze(), L.RecordDone("timed_out", "the bottle did not start within 600 s"),
      L.Comment(43, "the bottle did not start within 600 s; it is frozen. Comment to retry.")]),
    ("runner failure marks failed and says why on the issue, and that a comment retries",
     run(S.STARTING, slug=None, launch_prompt="acme/widgets#42: Fix it"),
     L.RunnerFailed("agent 'x' not found"),
     [L.MarkFailed("agent 'x' not found"),
      L.Comment(42, "Could not run the agent: agent 'x' not found" + RETRY)]),
    ("runner failure of a run without a kept launch prompt offers no retry",
     run(S.STARTING, slug=None, pr_number=43), L.RunnerFailed("agent 'x' not found"),
     [L.MarkFailed("agent 'x' not found"), L.Comment(42, "Could not run the agent: agent 'x' not found")]),
    ("a start whose CLI removed the bottle it had made forgets it and keeps its prompt, so a "
     "comment relaunches it", run(S.RUNNING, launch_prompt=None),
     L.RunnerFailed("pod cannot start: ErrImagePull", launch_prompt="LP"),
     [L.ForgetBottle("LP"), L.MarkFailed("pod cannot start: ErrImagePull"),
      L.Comment(42, "Could not run the agent: pod cannot start: ErrImagePull" + RETRY)]),
    ("runner failure quotes the bottle log's last lines", run(S.RESUMING),
     L.RunnerFailed("resume failed", LOG),
     [L.MarkFailed("resume failed"),
      L.Comment(42, "Could not run the agent: resume failed" + RETRY + QUOTED_LOG)]),
    ("trusted comment on a run that failed before it had a bottle relaunches it with its "
     "launch prompt and the comment", run(S.FAILED, slug=None, launch_prompt="LP"),
     L.TrustedComment("Gitea is back, try again"), [L.Relaunch(RELAUNCH_PROMPT)]),
    ("trusted comment on a run stopped before it had a bottle relaunches it",
     run(S.FROZEN, slug=None, launch_prompt="LP"), L.TrustedComment("Gitea is back, try again"),
     [L.Relaunch(RELAUNCH_PROMPT)]),
    ("trusted comment on a failed run with a bottle resumes it", run(S.FAILED, launch_prompt="LP"),
     L.TrustedComment("go on"), [L.Resume("go on")]),
    ("bottle exit without done quotes the bottle log's last lines", run(S.RUNNING),
     L.BottleExited(1, LOG),
     [L.Freeze(), L.RecordDone("exited:1", ""),
      L.Comment(42, "The agent exited (code 1) without signalling done; the bottle is frozen. "
                    "Comment to resume it." + QUOTED_LOG)]),
    ("a wall-time stop ends the run timed out with the reason, frozen for a comment",
     run(S.RUNNING, pr_number=43), L.BottleExited(124, LOG, timed_out=True, limit=900),
     [L.Freeze(S.TIMED_OUT), L.RecordDone("timed_out", TIMED_OUT),
      L.Comment(43, f"Stopped: {TIMED_OUT}; the bottle is frozen. Comment to resume it." + QUOTED_LOG)]),
    ("a wall-time stop with a remembered comment freezes (the freeze's end resumes it)",
     run(S.RUNNING, pending_prompt="go on"), L.BottleExited(124, "", timed_out=True),
     [L.Freeze(S.TIMED_OUT), L.RecordDone("timed_out", "the agent ran past its wall-time limit"),
      L.Comment(42, "Stopped: the agent ran past its wall-time limit; the bottle is frozen. "
                    "Comment to resume it.")]),
    ("a wall-time stop before the run was marked running freezes it", run(S.RESUMING),
     L.BottleExited(124, "", timed_out=True, limit=60),
     [L.Freeze(), L.RecordDone("timed_out", "the agent ran past its 60 s wall-time limit"),
      L.Comment(42, "Stopped: the agent ran past its 60 s wall-time limit; the bottle is frozen. "
                    "Comment to resume it.")]),
    ("a starting run whose bottle is created is running with that slug",
     run(S.STARTING, slug=None), L.BottleCreated(SLUG), [L.Started(SLUG)]),
    ("a bottle created for a run destroyed while starting is destroyed at once",
     run(S.DESTROYED, slug=None), L.BottleCreated(SLUG), [L.DestroyBottle(SLUG)]),
    ("a start that ends after its run was destroyed destroys the bottle again",
     run(S.DESTROYED), L.BottleExited(0), [L.DestroyBottle(SLUG)]),
    ("a bottle created after the watchdog failed its start is kept with the run, frozen",
     run(S.FAILED, slug=None), L.BottleCreated(SLUG), [L.FreezeBottle(SLUG)]),
    ("a bottle created after a stop froze its start is kept with the run, frozen",
     run(S.FROZEN, slug=None), L.BottleCreated(SLUG), [L.FreezeBottle(SLUG)]),
    ("restart with a running run's bottle freezes it and says so", run(S.RUNNING),
     L.Restarted(SLUG), INTERRUPTED),
    ("restart finds the bottle of a starting run whose slug was never recorded",
     run(S.STARTING, slug=None), L.Restarted(SLUG), [L.RecordSlug(SLUG), *INTERRUPTED]),
    ("restart before a starting run's bottle existed puts it back in the queue",
     run(S.STARTING, slug=None, launch_prompt="acme/widgets#42: Fix it"), L.Restarted(None),
     [L.Requeue()]),
    ("restart of a starting run without a kept launch prompt fails it",
     run(S.STARTING, slug=None), L.Restarted(None),
     [L.MarkFailed("no bottle after restart"), L.Comment(42, NO_BOTTLE)]),
    ("restart without a resuming run's bottle fails it", run(S.RESUMING, pr_number=43),
     L.Restarted(None), [L.MarkFailed("the bottle is gone after restart"), L.Comment(43, NO_BOTTLE)]),
]

IGNORED = [
    ("second launch for an issue with a live run", run(S.RUNNING), L.LaunchRequested("claude", (), True)),
    ("launch for an issue whose run was destroyed", run(S.DESTROYED), L.LaunchRequested("claude", (), True)),
    ("comment without any run", None, L.TrustedComment("hi")),
    ("comment on a destroyed run", run(S.DESTROYED), L.TrustedComment("hi")),
    ("comment on a queued run", run(S.QUEUED, slug=None), L.TrustedComment("hi")),
    ("comment on a failed run with neither a bottle nor a launch prompt", run(S.FAILED, slug=None),
     L.TrustedComment("hi")),
    ("comment on a queued run that keeps its launch prompt",
     run(S.QUEUED, slug=None, launch_prompt="LP"), L.TrustedComment("hi")),
    ("stop on a frozen run", run(S.FROZEN), L.StopRequested()),
    ("issue closed while the run has a PR", run(S.FROZEN, pr_number=43),
     L.IssueClosed(by_writer=True, closer="alice")),
    ("issue closed by a non-writer while the run has a PR", run(S.FROZEN, pr_number=43),
     L.IssueClosed(by_writer=False, closer="mallory")),
    ("done for a destroyed run", run(S.DESTROYED), L.DoneSignal("done", "x")),
    ("watchdog on a frozen run", run(S.FROZEN), L.WatchdogExpired(5.0)),
    ("bottle exit after a done froze the run", run(S.FROZEN), L.BottleExited(0)),
    ("wall-time stop after a done froze the run", run(S.FROZEN), L.BottleExited(124, timed_out=True)),
    ("free slot offered to a running run", run(S.RUNNING), L.SlotAvailable()),
    ("exit of a start destroyed before it had a bottle", run(S.DESTROYED, slug=None),
     L.BottleExited(0)),
    ("restart finds a frozen run", run(S.FROZEN), L.Restarted(SLUG)),
    ("bottle created for a running run", run(S.RUNNING), L.BottleCreated(SLUG)),
]

_TARGET = {L.Freeze: None, L.MarkFailed: S.FAILED, L.Destroy: S.DESTROYED,
           L.Resume: S.RESUMING, L.StartQueued: S.STARTING, L.Started: S.RUNNING,
           L.Requeue: S.QUEUED, L.Relaunch: S.QUEUED}


class DecideTest(unittest.TestCase):
    def test_each_event_yields_the_expected_actions(self) -> None:
        for name, current, event, expected in CASES:
            with self.subTest(name):
                self.assertEqual(L.decide(current, event), expected)

    def test_events_that_do_not_apply_are_ignored_with_a_reason(self) -> None:
        for name, current, event in IGNORED:
            with self.subTest(name):
                actions = L.decide(current, event)
                self.assertEqual(len(actions), 1)
                self.assertIsInstance(actions[0], L.Ignore)
                self.assertTrue(actions[0].reason)

    def test_bottle_exit_without_done_freezes_with_exit_status(self) -> None:
        for state in (S.STARTING, S.RUNNING, S.RESUMING):
            with self.subTest(state=state.value):
                actions = L.decide(run(state), L.BottleExited(3))
                self.assertEqual(actions[:2], [L.Freeze(), L.RecordDone("exited:3", "")])
                self.assertIsInstance(actions[2], L.Comment)

    def test_every_state_changing_action_is_an_allowed_transition(self) -> None:
        for name, current, event, expected in CASES:
            if current is None:
                continue
            state = current.state
            for action in expected:
                target = action.state if isinstance(action, L.Freeze) else _TARGET.get(type(action))
                if target is None:
                    continue
                with self.subTest(name, action=action):
                    self.assertIn(target, ALLOWED_TRANSITIONS[state])
                state = target


if __name__ == "__main__":
    unittest.main()
