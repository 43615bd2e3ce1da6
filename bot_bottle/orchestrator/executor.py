"""The lifecycle shell: decides each event with `lifecycle.decide` under the run's lock and
carries the actions out against the store, the bottle runner and the comment outbox, one
handler per action type (`_handlers`). Nothing here chooses a state: `decide` does, told what
is under way for the run (`InFlight`: a start, a freeze) that the store does not record.

Blocking work never runs on the caller's thread (the dispatcher's): an agent's start and
resumes are the `workers.BottleWorkers`' (a thread each, as long as the agent runs; their
number is bounded by the run slots), the bottle operations (`lifecycle.BOTTLE_OPS`: freeze,
destroy, opening a PR) go to the bounded pool of `bottle_ops.BottleOps`, one at a time per
run, retried with back-off; each comes back as a lifecycle event decided here. The ops an
action list asks for are handed to the pool once the whole list is applied, so the records
and comments `decide` put before them are written first.

Before deciding on an agent's exit, `event` relays the done files on disk and applies the
run's done signals (each once, under the run's lock), so an agent that signalled done and
exited is not also reported as exiting without done. A run keeps its launch prompt until its
bottle exists (a restart, or a trusted comment after a failure, launches it again from
there). `OpenPr` goes to the `pr_opener` (`pr_opener.PrOpener`, when the git gate is
configured); a destroyed run's gate repository is removed with its bottle.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Callable

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import log_tail
from bot_bottle.orchestrator.bottle_ops import DEFAULT_DELAYS, BottleOps
from bot_bottle.orchestrator.model import OrchestratorError, RunRecord, RunState
from bot_bottle.orchestrator.runner import BottleRunner
from bot_bottle.orchestrator.workers import BottleWorkers
from bot_bottle.orchestrator.targeting import marked

log = logging.getLogger(__name__)
REASON_WIDTH = 1000  # a failed bottle operation's reason, as comments and logs quote it

def _thread_spawn(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, daemon=True).start()


class Executor:
    def __init__(self, store, runner: BottleRunner, *, sidecar_socket: str, marker: str,
                 clock: Callable[[], float], spawn: Callable[[Callable[[], None]], None] = _thread_spawn,
                 on_slot_freed: Callable[[], None] = lambda: None, workspaces=None,
                 secret_values: tuple[str, ...] = (),
                 relay: Callable[[], object] = lambda: 0, pr_opener=None,
                 gate_repos=None, home: str | None = None, bottle_workers: int = 4,
                 retry_delays: tuple[float, ...] = DEFAULT_DELAYS, starts_at_once: int = 2) -> None:
        self._store = store
        self._pr_opener = pr_opener    # None: no git gate, done opens no PR
        self._gate_repos = gate_repos  # the git gate's per-run repositories, removed on destroy
        self._relay = relay  # one pass of the done relay (`Relay.tick`), before an exit
        self._runner = runner
        self._marker = marker
        self._clock = clock
        self._on_slot_freed = on_slot_freed
        self._secret_values = tuple(secret_values)
        self._run_locks: dict[int, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._workers = BottleWorkers(store, runner, decide_event=self.event,
                                      sidecar_socket=sidecar_socket, clock=clock, spawn=spawn,
                                      workspaces=workspaces, secret_values=secret_values,
                                      home=home, starts_at_once=starts_at_once)
        self._ops = BottleOps(size=bottle_workers, spawn=spawn, on_done=self._op_done,
                              delays=retry_delays, redact=self._redact)
        self._handlers: dict[type, Callable[[RunRecord, object, float], RunRecord]] = {
            L.Ignore: self._ignore, L.StartQueued: self._start_queued, L.Started: self._started,
            L.RecordSlug: self._record_slug, L.ForgetBottle: self._forget_bottle,
            L.Requeue: self._requeue,
            L.Relaunch: self._relaunch, L.Resume: self._resume,
            L.RememberPrompt: self._remember, L.MarkFrozen: self._mark_frozen,
            L.RecordDone: self._record_done, L.Destroy: self._destroy,
            L.MarkFailed: self._mark_failed, L.Comment: self._comment,
        }
        # the bottle operations: each returns the run and the work for a pool worker
        self._op_handlers: dict[type, Callable[[RunRecord, object, float],
                                               tuple[RunRecord, Callable[[], None]]]] = {
            L.Freeze: self._freeze, L.FreezeBottle: self._freeze_bottle,
            L.DestroyBottle: self._destroy_bottle, L.OpenPr: self._open_pr,
        }

    def _lock(self, run_id: int) -> threading.RLock:
        # decisions for one run are serialised: a worker's BottleExited must not decide on a
        # state the dispatcher is about to change (e.g. while it freezes for a done signal)
        with self._locks_guard:
            return self._run_locks.setdefault(run_id, threading.RLock())

    def in_flight(self, run_id: int) -> L.InFlight:
        """What is under way for the run in this process (what `decide` is told)."""
        return L.InFlight(starting=self._workers.starting(run_id),
                          freezing=self._ops.under_way(run_id, L.Freeze),
                          process=self._workers.process(run_id))

    def ops_idle(self) -> bool:
        """No bottle operation queued, running or waiting to be retried."""
        return self._ops.idle()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s for `ops_idle()`; whether it is."""
        return self._ops.wait_idle(timeout)

    def close(self, grace: float = 0.0) -> bool:
        """The process is ending: retries that wait are dropped, and the operations running
        get up to `grace` s to end (whether they did)."""
        self._ops.close()
        return self._ops.wait_idle(grace)

    def apply(self, run: RunRecord, actions: list) -> RunRecord:
        """Execute `actions` for an existing run, in order; the bottle operations among them
        go to the worker pool once the rest is done. Returns the run as it ends up."""
        ops = []
        for action in actions:
            op = self._op_handlers.get(type(action))
            if op is not None:
                run, work = op(run, action, self._clock())
                ops.append((action, work))
            else:
                run = self._one(run, action)
        for action, work in ops:
            self._ops.submit(run.id, action, work)
        return run

    def create(self, owner: str, repo: str, issue: int, action, prompt: str) -> RunRecord:
        """Make the run `decide` asked for (`Launch`: `starting`, its bottle started on a
        worker; `Queue`: `queued`)."""
        if not isinstance(action, (L.Launch, L.Queue)):
            raise OrchestratorError(f"cannot make a run from {action!r}")
        state = RunState.STARTING if isinstance(action, L.Launch) else RunState.QUEUED
        # stored with the run until its bottle exists: a launch cut short is made again from
        # it (as the CLI gets it: a lone surrogate cannot be stored or passed on as is)
        prompt = prompt.encode("utf-8", "replace").decode("utf-8")
        run = self._store.create_run(owner, repo, issue, action.agent, action.bottles, state,
                                     secrets.token_urlsafe(32), self._clock(),
                                     launch_prompt=prompt)
        if state is RunState.STARTING:
            self._workers.start(run, prompt)
        return run

    def _one(self, run: RunRecord, action) -> RunRecord:
        handler = self._handlers.get(type(action))
        if handler is None:  # `Launch` and `Queue` make a run: that is `create`
            raise OrchestratorError(f"cannot execute {action!r} for an existing run")
        return handler(run, action, self._clock())

    # ---- one handler per action type (`_handlers`); each returns the run as it ends up ----

    def _ignore(self, run: RunRecord, action: L.Ignore, now: float) -> RunRecord:
        log.info("ignored: %s repo=%s issue=%s run=%s", action.reason, run.repo_full_name,
                 run.issue_number, run.id)
        return run

    def _start_queued(self, run: RunRecord, action: L.StartQueued, now: float) -> RunRecord:
        run = self._store.transition(run.id, RunState.STARTING, now=now, reason="slot free")
        self._workers.start(run, run.launch_prompt or "")
        return run

    def _started(self, run: RunRecord, action: L.Started, now: float) -> RunRecord:
        reason = "resumed" if run.state is RunState.RESUMING else "started"
        return self._store.transition(run.id, RunState.RUNNING, now=now, reason=reason,
                                      slug=action.slug, launch_prompt=None)

    def _record_slug(self, run: RunRecord, action: L.RecordSlug, now: float) -> RunRecord:
        return self._store.update_run(run.id, now=now, slug=action.slug)

    def _forget_bottle(self, run: RunRecord, action: L.ForgetBottle, now: float) -> RunRecord:
        return self._store.update_run(run.id, now=now, slug=None,
                                      launch_prompt=action.launch_prompt)

    def _requeue(self, run: RunRecord, action: L.Requeue, now: float) -> RunRecord:
        run = self._store.transition(run.id, RunState.QUEUED, now=now,
                                     reason="restarted before the bottle existed")
        self._on_slot_freed()
        return run

    def _relaunch(self, run: RunRecord, action: L.Relaunch, now: float) -> RunRecord:
        run = self._store.transition(run.id, RunState.QUEUED, now=now,
                                     reason="relaunched by a trusted comment",
                                     launch_prompt=action.prompt, error=None)
        self._on_slot_freed()
        return run

    def _resume(self, run: RunRecord, action: L.Resume, now: float) -> RunRecord:
        run = self._store.transition(run.id, RunState.RESUMING, now=now, reason="resume",
                                     pending_prompt=None)
        self._workers.resume(run, action.prompt)
        return run

    def _remember(self, run: RunRecord, action: L.RememberPrompt, now: float) -> RunRecord:
        return self._store.update_run(run.id, now=now, pending_prompt=action.prompt)

    def _mark_frozen(self, run: RunRecord, action: L.MarkFrozen, now: float) -> RunRecord:
        run = self._store.transition(run.id, action.state, now=now, reason="freeze")
        self._on_slot_freed()
        return run

    def _record_done(self, run: RunRecord, action: L.RecordDone, now: float) -> RunRecord:
        return self._store.update_run(run.id, now=now, last_done_status=action.status,
                                      last_done_summary=action.summary)

    def _destroy(self, run: RunRecord, action: L.Destroy, now: float) -> RunRecord:
        run = self._store.transition(run.id, RunState.DESTROYED, now=now, reason="destroy")
        self._on_slot_freed()
        return run

    def _mark_failed(self, run: RunRecord, action: L.MarkFailed, now: float) -> RunRecord:
        run = self._store.transition(run.id, RunState.FAILED, now=now, reason=action.reason,
                                     error=action.reason)
        self._on_slot_freed()
        return run

    def _comment(self, run: RunRecord, action: L.Comment, now: float) -> RunRecord:
        self._store.enqueue_comment(run.id, run.owner, run.repo, action.number,
                                    marked(action.body, self._marker), now)
        return run

    # ---- the bottle operations (`_op_handlers`): the run, and the work for a pool worker ----

    def _freeze(self, run: RunRecord, action: L.Freeze, now: float):
        slug = run.slug
        if not slug:  # `decide` freezes only a run with a bottle
            raise OrchestratorError(f"run {run.id} has no bottle to freeze")
        return run, lambda: self._runner.freeze(slug)

    def _freeze_bottle(self, run: RunRecord, action: L.FreezeBottle, now: float):
        if run.slug != action.slug:  # recorded first: a close destroys it, freeze or not
            run = self._store.update_run(run.id, now=now, slug=action.slug)
        return run, lambda: self._runner.freeze(action.slug)

    def _destroy_bottle(self, run: RunRecord, action: L.DestroyBottle, now: float):
        if run.slug != action.slug:  # so the start's end can destroy it again
            run = self._store.update_run(run.id, now=now, slug=action.slug)
        destroyed = run

        def work() -> None:
            self._runner.destroy(action.slug)
            if self._gate_repos is not None:
                self._gate_repos.discard(destroyed)
        return run, work

    def _open_pr(self, run: RunRecord, action: L.OpenPr, now: float):
        run_id = run.id

        def work() -> None:
            current = self._store.get_run(run_id)  # the agent may have opened one meanwhile
            if self._pr_opener is not None and current is not None:
                self._pr_opener.open(current)
        return run, work

    def _op_done(self, run_id: int, event, settle: Callable[[], None]) -> None:
        """A pool worker's operation ended: decided like any event, once it no longer
        counts as under way (`settle`), all under the run's lock."""
        self.event(run_id, event, settle=settle)

    def _redact(self, run_id: int, text: str) -> str:
        """An operation's error as an issue comment may quote it: our secrets out, one
        bounded line (a CLI error may carry a path the agent chose)."""
        try:
            run = self._store.get_run(run_id)
        except Exception:  # the store is failing: redact what we know
            run = None
        cleaned = log_tail.clean(text, (run.run_token if run else "", *self._secret_values),
                                 lines=5, width=REASON_WIDTH).replace("\n", " ")
        if len(cleaned) > REASON_WIDTH:
            cleaned = cleaned[:REASON_WIDTH] + " […]"
        return cleaned or "unknown error"

    # ---- deciding -------------------------------------------------------------------------

    def event(self, run_id: int, event, *, start_ended: bool = False,
              settle: Callable[[], None] | None = None) -> RunRecord | None:
        """Decide on `event` for the run and carry the actions out, under the run's lock.
        `start_ended`: the event is the last word of the run's start in this process (its
        exit or failure), so a relaunch decided after it no longer waits for that start;
        `settle`: what ends the pool operation the event reports (called under the lock)."""
        if isinstance(event, L.BottleExited):
            # an agent that signalled done and exited: the sidecar wrote the done file before
            # it answered, so it is on disk now; apply it first, or the exit would be taken
            # (and commented on) as an exit without done
            try:
                self._relay()
                for done in self._store.pending_done_events(run_id):
                    self.apply_done(done)
            except Exception:  # the exit must still be decided, or the run stays working
                log.exception("could not apply the done signals of run %s before its exit",
                              run_id)
        with self._lock(run_id):
            if start_ended:
                self._workers.start_ended(run_id)
            if settle is not None:
                settle()
            run = self._store.get_run(run_id)
            if run is None:
                return None
            return self.apply(run, L.decide(run, event, self.in_flight(run_id)))

    def apply_done(self, done) -> None:
        """Apply a relayed done event once: the dispatcher and a bottle's worker may both
        hold it, so it is checked and marked under the run's lock. It is marked once handed
        to `decide` even if carrying the decision out failed: a done signal that cannot be
        applied is logged, never retried on every pass."""
        with self._lock(done.run_id):
            if not self._store.done_event_pending(done.id):
                return
            try:
                self.event(done.run_id, L.DoneSignal(done.status, done.summary))
            except Exception:
                log.exception("done signal %s of run %s could not be applied", done.id,
                              done.run_id)
            finally:
                self._store.mark_done_processed(done.id)
