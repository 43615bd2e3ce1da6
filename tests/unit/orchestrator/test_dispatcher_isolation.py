"""Failure isolation per run, in one process (real store, fake Gitea over HTTP, a runner that
holds like the CLI): a bottle whose freeze always fails (a hostile agent made its workspace
unreadable) ends `failed` with a comment after its retries while other runs that signal done
are frozen at once; a freeze that hangs holds one worker and delays neither another run's
freeze, nor a queued run's launch, nor a comment; a retry's back-off holds no worker; a step
of a pass that fails stops neither the others nor the next pass."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter

from bot_bottle.orchestrator.dispatcher import Orchestrator
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.runner import RunnerError

from ._fakes import HoldingBottleRunner
from .test_dispatcher import ORG, OWNER, REPO, DispatcherTest

LONG_PATH = "/workspace/" + "d/" * 2500 + "x"  # past PATH_MAX: the hostile agent's doing


class FaultyFreezeRunner(HoldingBottleRunner):
    """`commit` of a slug in `poisoned` fails (its second attempt first waits for `go_on`,
    `second_attempt` says it is there); of a slug in `hung` it blocks until `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.poisoned: set[str] = set()
        self.hung: set[str] = set()
        self.attempts: Counter[str] = Counter()
        self.second_attempt, self.go_on = threading.Event(), threading.Event()
        self.hanging, self.release = threading.Event(), threading.Event()

    def token_of(self, slug: str) -> str:
        return next(c[5]["BOT_BOTTLE_FORGE_RUN_TOKEN"] for c in self.calls
                    if c[0] == "start" and c[3] == slug)

    def freeze(self, slug) -> None:
        self.attempts[slug] += 1
        if slug in self.hung:
            self.hanging.set()
            self.release.wait(30)
        if slug in self.poisoned:
            if self.attempts[slug] == 2:
                self.second_attempt.set()
                self.go_on.wait(30)
            # what the CLI says when the snapshot cannot read a file the agent made, with
            # the agent's own text in it (its run token, to see that it is redacted)
            raise RunnerError(f"bot-bottle commit failed: cannot read {LONG_PATH} "
                              f"{self.token_of(slug)}")
        super().freeze(slug)

    def release_all(self) -> None:
        self.go_on.set()
        self.release.set()
        super().release_all()


class PoisonedFreezeTest(DispatcherTest):
    def make_runner(self):
        return FaultyFreezeRunner()

    def slug(self, n: int) -> str:
        return f"acme-widgets-{n}"

    def test_a_run_whose_freeze_always_fails_fails_alone_while_bystanders_are_frozen(self) -> None:
        poisoned = self.new_issue(title="poison")
        bystanders = [self.new_issue(title=f"bystander {i}") for i in range(3)]
        for n in (poisoned, *bystanders):
            self.wait_state(n, RunState.RUNNING)
        self.runner.poisoned.add(self.slug(poisoned))
        self.signal_done(self.run_for(poisoned))
        self.assertTrue(self.runner.second_attempt.wait(10), "no retry of the failed freeze")
        # the done signal was handed over once: it is not applied again on every pass
        self.assertEqual(self.store.pending_done_events(), [])

        for n in bystanders:
            self.signal_done(self.run_for(n), summary=f"bystander {n}")
        self.wait(lambda: all(self.run_for(n).state is RunState.FROZEN for n in bystanders),
                  timeout=10)
        self.assertIs(self.run_for(poisoned).state, RunState.RUNNING, "still being retried")

        self.runner.go_on.set()  # the last attempts fail too
        self.wait_state(poisoned, RunState.FAILED)
        self.settle()  # the comment is queued right after the state change
        failed = self.run_for(poisoned)
        self.assertEqual(self.runner.attempts[self.slug(poisoned)], 3)
        self.assertIn("could not freeze the bottle (3 attempts)", failed.error)
        token = self.runner.token_of(self.slug(poisoned))
        said = [c for c in self.issue_comments(poisoned) if "Could not freeze" in c]
        self.assertEqual(len(said), 1, said)
        self.assertIn("cannot read /workspace/d/d/", said[0])
        self.assertNotIn(token, said[0])
        self.assertNotIn(token, failed.error)
        self.assertLess(len(said[0]), 2000, "the agent's path is cut")
        self.assertEqual(self.store.slot_holders(), 0)
        for _ in range(3):  # later passes leave it alone
            self.orch.process_pending()
        self.assertEqual(self.runner.attempts[self.slug(poisoned)], 3)
        for n in bystanders:
            self.assertTrue(any(f"bystander {n}" in c for c in self.issue_comments(n)))


class FlakyQueueStore:
    """The real store, except that reading the queue fails while `broken` is set (a locked
    or corrupt row, say)."""

    def __init__(self, store) -> None:
        self._store, self.broken = store, True

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def oldest_queued_run(self):
        if self.broken:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self._store.oldest_queued_run()


class GuardedPassTest(DispatcherTest):
    max_concurrent = 1

    def test_a_failing_step_of_a_pass_stops_neither_done_signals_nor_comments(self) -> None:
        first = self.new_issue(title="first")
        self.wait_state(first, RunState.RUNNING)
        queued = self.new_issue(title="queued")
        flaky = FlakyQueueStore(self.store)
        orch = Orchestrator(flaky, self.executor, self.runner, self.forge_factory, org=ORG,
                            known_agents=lambda: ["claude"], max_concurrent=1,
                            clock=self.clock.now)
        self.store.record_done_event("f-first", self.run_for(first).id, "done", "all good",
                                     self.clock.now(), "done", "f-first")
        orch.process_pending()  # its slot step fails
        # the done step before it did its part, and the outbox step after it still ran
        self.assertTrue(any("all good" in c["body"]
                            for c in self.gitea.comments(OWNER, REPO, first)))
        self.settle()
        self.assertIs(self.run_for(first).state, RunState.FROZEN)
        orch.process_pending()
        self.assertIs(self.run_for(queued).state, RunState.QUEUED)
        flaky.broken = False
        orch.process_pending()
        self.wait_state(queued, RunState.RUNNING)


class OneWorkerBackOffTest(DispatcherTest):
    bottle_workers = 1
    retry_delays = (3600.0, 3600.0)  # only the test's end (close) ends the wait

    def make_runner(self):
        return FaultyFreezeRunner()

    def test_a_retry_waiting_out_its_back_off_holds_no_worker(self) -> None:
        poisoned, other = self.new_issue(title="poison"), self.new_issue(title="other")
        self.wait_state(poisoned, RunState.RUNNING)
        self.wait_state(other, RunState.RUNNING)
        self.runner.poisoned.add(f"acme-widgets-{poisoned}")
        self.signal_done(self.run_for(poisoned))
        self.wait(lambda: self.runner.attempts[f"acme-widgets-{poisoned}"] == 1)
        self.signal_done(self.run_for(other))  # the one worker is free during the back-off
        self.wait_state(other, RunState.FROZEN)
        self.assertIs(self.run_for(poisoned).state, RunState.RUNNING)
        self.assertFalse(self.executor.ops_idle(), "the poisoned freeze waits for its retry")


class HungFreezeTest(DispatcherTest):
    """The dispatcher runs on its own thread here, as in the service."""
    max_concurrent = 2
    bottle_workers = 2

    def make_runner(self):
        return FaultyFreezeRunner()

    def setUp(self) -> None:
        super().setUp()
        self.stop = threading.Event()
        thread = threading.Thread(target=self.orch.run, args=(self.stop,), daemon=True)
        thread.start()

        def stop_dispatcher() -> None:
            self.stop.set()
            self.orch.wake()
            thread.join(10)
            self.assertFalse(thread.is_alive(), "the dispatcher did not stop")
        self.addCleanup(stop_dispatcher)  # before the bottles are released (LIFO)

    def done(self, run, summary: str) -> None:
        """What the relay does with a done file: record it, wake the dispatcher."""
        self.seq += 1
        self.store.record_done_event(f"src-{run.id}-{self.seq}", run.id, "done", summary,
                                     self.clock.now(), "done", f"f{self.seq}")
        self.orch.wake()

    def test_a_hung_freeze_delays_no_other_run_s_freeze_launch_or_comment(self) -> None:
        hung, other = self.new_issue(title="hung"), self.new_issue(title="other")
        queued = self.new_issue(title="queued")
        self.wait_state(hung, RunState.RUNNING)
        self.wait_state(other, RunState.RUNNING)
        self.assertIs(self.run_for(queued).state, RunState.QUEUED)
        self.runner.hung.add(f"acme-widgets-{hung}")
        self.done(self.run_for(hung), "hung one")
        self.assertTrue(self.runner.hanging.wait(10), "the hung freeze never began")

        self.done(self.run_for(other), "the other one")
        self.wait_state(other, RunState.FROZEN)
        self.wait_state(queued, RunState.RUNNING)  # the slot the other run freed
        self.wait(lambda: any("the other one" in c["body"]
                              for c in self.gitea.comments(OWNER, REPO, other)))
        self.assertIs(self.run_for(hung).state, RunState.RUNNING, "its freeze still hangs")

        self.runner.release.set()
        self.wait_state(hung, RunState.FROZEN)
        self.assertEqual(self.runner.attempts[f"acme-widgets-{hung}"], 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
