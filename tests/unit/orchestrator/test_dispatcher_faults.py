"""The dispatcher against the lifecycle faults seen from outside, in one process (real store,
fake Gitea over HTTP, fake runners that behave like the CLI): an agent that signals done and
exits gets one comment per done; a bottle made for an issue closed while its run was
`starting` is destroyed; a restart relaunches a `starting` run whose bottle was never made,
freezes what has a bottle and decides nothing on a guess."""

from __future__ import annotations

import threading
from pathlib import Path

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.runner import BottleExit, BottleGone, RunnerError
from bot_bottle.orchestrator.sidecar import write_done_file
from bot_bottle.demo_support.fake_gitea_payloads import close_issue, issue_event

from ._fakes import FakeBottleRunner, GatedStartRunner, HoldingBottleRunner, seed_run
from .test_dispatcher import OWNER, REPO, DispatcherTest


class DoneThenExitRunner(FakeBottleRunner):
    """An agent that POSTs /done and exits: the sidecar's done file (or, with `relayed`, the
    done event the relay already made of it) exists before `start`/`resume` return; with
    `hold`, the agent signals only once the test sets `go` (after the dispatcher's pass that
    launched it, which would otherwise apply the done itself) and exits once it sets `exit_gate`."""

    def __init__(self, store, queue: Path) -> None:
        super().__init__()
        self.store, self.queue = store, queue
        self.relayed = self.hold = False
        self.exit_gate = threading.Event()
        self.go = threading.Event()
        self.signals = 0

    def _signal_done(self, env) -> None:
        run = self.store.get_run_by_token(env["BOT_BOTTLE_FORGE_RUN_TOKEN"])
        if self.hold:
            self.go.wait(10)
        self.signals += 1
        summary = f"run {self.signals}"
        if self.relayed:
            self.store.record_done_event(f"d{self.signals}", run.id, "done", summary, 0.0,
                                         "done", f"d{self.signals}")
        else:
            write_done_file(self.queue, run.id, "done", summary, now_ns=self.signals)
        if self.hold:
            self.exit_gate.wait(10)

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        result = super().start(agent=agent, bottles=bottles, label=label, prompt=prompt, env=env,
                               on_slug=on_slug, workspace=workspace)
        self._signal_done(env)
        return result

    def resume(self, *, slug, prompt, env) -> BottleExit:
        result = super().resume(slug=slug, prompt=prompt, env=env)
        self._signal_done(env)
        return result

    def release_all(self) -> None:
        self.go.set()
        self.exit_gate.set()


class DoneThenExitTest(DispatcherTest):
    """The exit of an agent that signalled done is not also an exit without done."""

    def make_runner(self):
        return DoneThenExitRunner(self.store, self.queue)

    def comments_about(self, n: int) -> tuple[int, int]:
        """(done comments, exit-without-done comments) on the issue and its PR."""
        bodies = [c for number in (n, *[p["number"] for p in self.gitea.prs(OWNER, REPO)])
                  for c in self.issue_comments(number)]
        return (sum("Agent finished with status **done**" in b for b in bodies),
                sum("without signalling done" in b for b in bodies))

    def test_an_agent_that_signals_done_and_exits_gets_exactly_one_comment_per_done(self) -> None:
        n = self.new_issue()
        # frozen is written before the done status (Freeze, then RecordDone): wait for both,
        # then for the worker, which decides on the exit after the done
        self.wait(lambda: self.run_for(n) is not None and self.run_for(n).last_done_summary == "run 1"
                  and self.run_for(n).state is RunState.FROZEN)
        self.join_workers()
        self.assertEqual(self.run_for(n).last_done_status, "done")
        self.assertEqual(self.comments_about(n), (1, 0))
        self.comment(n, "Please go on.", "alice")  # resumed; signals done and exits again
        self.wait(lambda: self.run_for(n).last_done_summary == "run 2"
                  and self.run_for(n).state is RunState.FROZEN)
        self.join_workers()
        self.assertEqual(self.comments_about(n), (2, 0))
        self.assertEqual([c[0] for c in self.runner.calls],
                         ["start", "freeze", "resume", "freeze"])
        self.assertEqual(self.store.pending_done_events(), [])

    def test_a_done_relayed_but_not_yet_dispatched_is_applied_before_the_exit(self) -> None:
        self.runner.relayed = self.runner.hold = True
        n = self.new_issue()
        self.runner.go.set()  # the pass that launched it is over
        self.wait(lambda: self.store.pending_done_events())  # the dispatcher has not run since
        self.runner.exit_gate.set()
        run = self.wait_state(n, RunState.FROZEN)
        self.join_workers()  # the worker has decided on the exit
        self.orch.process_pending()  # the dispatcher's turn: nothing left to apply
        self.assertEqual(self.comments_about(n), (1, 0))
        self.assertEqual(self.store.get_run(run.id).last_done_summary, "run 1")


class CloseWhileStartingTest(DispatcherTest):
    def make_runner(self):
        return GatedStartRunner()

    def test_a_bottle_made_for_an_issue_closed_while_starting_is_destroyed(self) -> None:
        n = self.new_issue()
        self.assertTrue(self.runner.entered.wait(5))
        self.assertIs(self.run_for(n).state, RunState.STARTING)
        close_issue(self.gitea, OWNER, REPO, n)
        self.deliver("issues", issue_event(self.gitea, OWNER, REPO, n, "closed", "alice"))
        self.assertIs(self.run_for(n).state, RunState.DESTROYED)
        self.runner.slug_gate.set()  # the start in flight makes its bottle after all
        slug = f"acme-widgets-{n}"
        # destroyed as soon as its slug is known (which ends the start), then once more when
        # the start has ended, for whatever it wrote after the first destroy
        self.wait(lambda: self.runner.calls.count(("destroy", slug)) == 2)
        for thread in self.threads:
            thread.join(5)
        run = self.run_for(n)
        self.assertEqual((run.state, run.slug), (RunState.DESTROYED, slug))
        self.assertNotIn(slug, self.runner.bottle_states())
        self.assertEqual([c[0] for c in self.runner.calls], ["start", "destroy", "destroy"])
        self.assertEqual(self.issue_comments(n), [])


class ReconcileTest(DispatcherTest):
    def starting(self, issue: int, prompt: str | None):
        """A run the previous process created `starting` (with its launch prompt, as the
        executor stores it) and died before the bottle existed."""
        return self.store.create_run(OWNER, REPO, issue, "claude", (), RunState.STARTING,
                                     f"tok-{issue}", 0.0, launch_prompt=prompt)

    def test_restart_freezes_runs_with_a_bottle_and_fails_runs_whose_bottle_is_gone(self) -> None:
        for title in ("one", "two", "three"):
            self.gitea.add_issue(OWNER, REPO, title)
        with_bottle = seed_run(self.store, 1, RunState.RUNNING, slug="acme-widgets-1")
        gone = seed_run(self.store, 2, RunState.RUNNING, slug="acme-widgets-2")
        queued = seed_run(self.store, 3, RunState.QUEUED)
        self.runner.states["acme-widgets-1"] = "running"
        self.assertEqual(sorted(self.orch.reconcile()), [with_bottle.id, gone.id])
        self.settle()  # the freeze runs on a worker
        frozen = self.store.get_run(with_bottle.id)
        self.assertEqual((frozen.state, frozen.last_done_status), (RunState.FROZEN, "interrupted"))
        self.assertIn(("freeze", "acme-widgets-1"), self.runner.calls)
        self.assertIs(self.store.get_run(gone.id).state, RunState.FAILED)
        self.assertIs(self.store.get_run(queued.id).state, RunState.QUEUED)
        self.assertEqual(self.orch.reconcile(), [])  # idempotent once settled
        self.orch.process_pending()  # the queued run gets its slot
        self.wait(lambda: self.store.get_run(queued.id).state is RunState.RUNNING)
        self.assertTrue(any("restarted" in c for c in self.issue_comments(1)))
        self.assertTrue(any("the run failed" in c for c in self.issue_comments(2)))

    def test_a_starting_run_whose_bottle_was_never_made_is_launched_again_with_its_prompt(self) -> None:
        n = self.gitea.add_issue(OWNER, REPO, "one")
        run = self.starting(n, "acme/widgets#1: one\n\nthe launch prompt")
        self.assertEqual(self.orch.reconcile(), [run.id])
        self.assertIs(self.store.get_run(run.id).state, RunState.QUEUED)
        self.orch.process_pending()
        after = self.wait_state(n, RunState.RUNNING)
        [start] = [c for c in self.runner.calls if c[0] == "start"]
        self.assertEqual(start[4], "acme/widgets#1: one\n\nthe launch prompt")
        self.assertEqual((after.slug, after.launch_prompt), ("acme-widgets-1", None))
        moves = [e.detail["to"] for e in self.store.op_log(run.id) if e.kind == "transition"]
        self.assertEqual(moves, ["queued", "starting", "running"])
        self.assertEqual(self.issue_comments(n), [], "nothing failed, nothing to say")

    def test_a_relaunch_that_finds_the_previous_starts_late_bottle_adopts_it(self) -> None:
        n = self.gitea.add_issue(OWNER, REPO, "one")
        run = self.starting(n, "prompt")
        self.orch.reconcile()  # no bottle yet: back to the queue
        runner = self.runner
        real_start = runner.start

        def orphan_was_faster(**kwargs):
            # the CLI the previous process launched outlived it and made the bottle just now
            runner.states["acme-widgets-1"] = "running"
            runner.start = real_start
            raise RunnerError("slug 'acme-widgets-1' is in use by another bottle")
        runner.start = orphan_was_faster
        self.orch.process_pending()
        self.wait(lambda: self.store.get_run(run.id).state is RunState.FROZEN)
        self.join_workers()  # frozen comes before the done status and the comment
        after = self.store.get_run(run.id)
        self.assertEqual((after.slug, after.last_done_status), ("acme-widgets-1", "interrupted"))
        self.assertIn(("freeze", "acme-widgets-1"), runner.calls)
        comments = self.issue_comments(n)
        self.assertTrue(any("restarted while the agent worked" in c for c in comments), comments)
        self.assertEqual([c for c in comments if "failed" in c], [])

    def test_a_first_launch_that_fails_is_failed_even_if_a_bottle_has_its_label(self) -> None:
        self.runner.states["acme-widgets-1"] = "exited"  # not made by a start of ours
        self.runner.fail_with = RunnerError("slug 'acme-widgets-1' is in use by another bottle")
        n = self.new_issue()
        run = self.wait_state(n, RunState.FAILED)
        self.assertIsNone(run.slug)

    def test_a_starting_run_whose_bottle_exists_under_its_label_is_adopted_and_frozen(self) -> None:
        n = self.gitea.add_issue(OWNER, REPO, "one")
        run = self.starting(n, "prompt")  # died after the CLI made the bottle, before on_slug
        self.runner.states["acme-widgets-1"] = "running"
        self.orch.reconcile()
        self.settle()
        after = self.store.get_run(run.id)
        self.assertEqual((after.state, after.slug), (RunState.FROZEN, "acme-widgets-1"))
        self.assertEqual([c[0] for c in self.runner.calls], ["freeze"])

    def test_a_starting_run_from_before_launch_prompts_were_kept_fails_with_a_comment(self) -> None:
        n = self.gitea.add_issue(OWNER, REPO, "one")
        run = self.starting(n, None)
        self.orch.reconcile()
        self.assertIs(self.store.get_run(run.id).state, RunState.FAILED)
        self.assertTrue(any("the run failed" in c for c in self.issue_comments(n)))

    def test_when_bottles_cannot_be_listed_no_run_is_failed_or_launched_on_a_guess(self) -> None:
        n = self.gitea.add_issue(OWNER, REPO, "one")
        run = self.starting(n, "prompt")

        def broken():
            raise RunnerError("bot-bottle list failed: exit 2")
        self.runner.bottle_states = broken
        self.assertEqual(self.orch.reconcile(), [])
        self.assertIs(self.store.get_run(run.id).state, RunState.STARTING)
        self.assertEqual(self.runner.calls, [])


    def test_a_done_signal_relayed_before_the_crash_is_applied_once_after_reconcile(self) -> None:
        self.gitea.add_issue(OWNER, REPO, "one")
        run = seed_run(self.store, 1, RunState.RUNNING, slug="acme-widgets-1")
        self.runner.states["acme-widgets-1"] = "running"
        self.store.record_done_event("f1", run.id, "done", "finished before the crash",
                                     self.clock.now(), "done", "f1")
        self.orch.reconcile()
        self.orch.process_pending()
        self.settle()
        self.orch.process_pending()
        after = self.store.get_run(run.id)
        self.assertEqual((after.state, after.last_done_status, after.last_done_summary),
                         (RunState.FROZEN, "done", "finished before the crash"))
        self.assertEqual([c for c in self.runner.calls if c[0] == "freeze"],
                         [("freeze", "acme-widgets-1")])
        self.assertEqual(self.store.pending_done_events(), [])
        comments = self.issue_comments(1)
        self.assertEqual(sum("finished before the crash" in c for c in comments), 1)
        self.assertEqual([c for c in comments if "restarted" in c], [], "one comment per done")


if __name__ == "__main__":
    import unittest
    unittest.main()


class LateStartExitRunner(FakeBottleRunner):
    """A start whose agent signals done, is frozen, and whose CLI returns only once the test
    sets `start_exit` (after the bottle was resumed); the resume holds until `resume_exit`."""

    def __init__(self, store, queue: Path) -> None:
        super().__init__()
        self.store, self.queue = store, queue
        self.start_exit, self.resume_exit = threading.Event(), threading.Event()
        self.signalled, self.resumed = threading.Event(), threading.Event()

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        result = super().start(agent=agent, bottles=bottles, label=label, prompt=prompt, env=env,
                               on_slug=on_slug, workspace=workspace)
        run = self.store.get_run_by_token(env["BOT_BOTTLE_FORGE_RUN_TOKEN"])
        write_done_file(self.queue, run.id, "done", "first", now_ns=1)
        self.signalled.set()
        self.start_exit.wait(10)
        return result

    def resume(self, *, slug, prompt, env) -> BottleExit:
        result = super().resume(slug=slug, prompt=prompt, env=env)
        self.resumed.set()
        self.resume_exit.wait(10)
        return result

    def release_all(self) -> None:
        self.start_exit.set()
        self.resume_exit.set()


class LateStartExitTest(DispatcherTest):
    """The resume race: the start's CLI returning after its bottle was frozen and resumed does
    not freeze the resumed bottle; the resume's own exit still does."""

    def make_runner(self):
        return LateStartExitRunner(self.store, self.queue)

    def test_a_late_exit_of_the_start_leaves_the_resumed_run_running(self) -> None:
        n = self.new_issue()
        self.assertTrue(self.runner.signalled.wait(5))
        self.relay.tick()  # the relay makes a done event of the sidecar's file
        self.orch.process_pending()  # the dispatcher's pass applies it: a freeze
        self.wait_state(n, RunState.FROZEN)
        self.comment(n, "Please go on.", "alice")
        self.assertTrue(self.runner.resumed.wait(5))
        self.wait_state(n, RunState.RUNNING)
        self.runner.start_exit.set()  # the start's CLI returns only now
        self.threads[0].join(5)
        self.assertFalse(self.threads[0].is_alive())
        self.assertIs(self.run_for(n).state, RunState.RUNNING)
        self.assertEqual([c[0] for c in self.runner.calls], ["start", "freeze", "resume"])
        self.runner.resume_exit.set()  # the resumed agent exits without done: that one counts
        run = self.wait_state(n, RunState.FROZEN)
        self.join_workers()
        self.assertEqual(self.store.get_run(run.id).last_done_status, "exited:0")
        self.assertEqual([c[0] for c in self.runner.calls],
                         ["start", "freeze", "resume", "freeze"])


class CountingStartRunner(HoldingBottleRunner):
    """Starts that wait before their slug line until the test lets one through (`release`);
    `waiting` counts those in that stretch now, `most` the most at once."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.waiting = self.most = self.allowed = 0

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        def gated(slug: str) -> None:
            with self.cond:
                self.waiting += 1
                self.most = max(self.most, self.waiting)
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.allowed > 0, 10)
                self.allowed -= 1
                self.waiting -= 1
            on_slug(slug)
        return super().start(agent=agent, bottles=bottles, label=label, prompt=prompt, env=env,
                             on_slug=gated, workspace=workspace)

    def release(self, n: int = 1) -> None:
        with self.cond:
            self.allowed += n
            self.cond.notify_all()

    def release_all(self) -> None:
        self.release(100)
        super().release_all()


class StartsAtOnceTest(DispatcherTest):
    """A launch storm: only `starts_at_once` (2 here) starts are before their slug line at a
    time; each slug line lets the next one begin."""

    max_concurrent = 5

    def make_runner(self):
        return CountingStartRunner()

    def test_at_most_two_starts_run_before_their_slug_line(self) -> None:
        issues = [self.new_issue(title=f"Fix {i}") for i in range(5)]
        cond = self.runner.cond
        with cond:
            self.assertTrue(cond.wait_for(lambda: self.runner.waiting == 2, 5))
        self.assertEqual(len(self.runner.calls), 2, "the third start waits for a slug line")
        for done in range(1, 4):
            self.runner.release()
            with cond:
                self.assertTrue(cond.wait_for(
                    lambda: self.runner.waiting == 2 and len(self.runner.calls) == 2 + done, 5))
        self.runner.release(2)
        for n in issues:
            self.wait_state(n, RunState.RUNNING)
        self.assertEqual(self.runner.most, 2)


class BottleGoneRunner(HoldingBottleRunner):
    """The first start makes its bottle (slug line) and the CLI removes it again before the
    agent runs (a pod that never started); later starts work."""

    def start(self, *, agent, bottles, label, prompt, env, on_slug, workspace=None) -> BottleExit:
        if not any(c[0] == "start" for c in self.calls):
            self.calls.append(("start", agent, tuple(bottles), label, prompt, dict(env)))
            on_slug(label.lower())
            raise BottleGone("pod bb-x-run-1 cannot start: ErrImagePull")
        return super().start(agent=agent, bottles=bottles, label=label, prompt=prompt, env=env,
                             on_slug=on_slug, workspace=workspace)


class BottleGoneTest(DispatcherTest):
    def make_runner(self):
        return BottleGoneRunner()

    def test_a_comment_relaunches_a_start_whose_bottle_was_removed_again(self) -> None:
        n = self.new_issue()
        run = self.wait_state(n, RunState.FAILED)
        self.join_workers()
        run = self.store.get_run(run.id)
        self.assertIsNone(run.slug, "the removed bottle is forgotten")
        self.assertIn("ErrImagePull", run.error)
        self.wait(lambda: any("Comment to retry" in c for c in self.issue_comments(n)))
        self.comment(n, "The image is pulled now, go.", "alice")
        self.wait_state(n, RunState.RUNNING)
        starts = [c for c in self.runner.calls if c[0] == "start"]
        self.assertEqual(len(starts), 2)
        self.assertIn("Fix it", starts[1][4])
        self.assertIn("The image is pulled now, go.", starts[1][4])
