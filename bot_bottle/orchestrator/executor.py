"""The lifecycle shell: carries out the actions `lifecycle.decide` returns against the store,
the bottle runner and the comment outbox. Blocking bottle runs go to worker threads through
an injected `spawn` (tests pass a synchronous one). Delivery parsing and targeting (which
produce the lifecycle events) are wired in by the dispatcher, not here.

A launch's worker first checks out the issue's repository (`workspace.Workspaces`, when
configured) and hands it to `start --workspace`; when the agent's process ends (or the
runner fails) the worker reads the bottle log's last lines and redacts our secrets from them
before raising the event, so `decide` stays pure and the dispatcher never waits on a CLI.

Before a worker decides on its agent's exit it relays the done files on disk and applies the
run's done signals (each once, under the run's lock), so an agent that signalled done and
exited is not also reported as exiting without done. A run keeps its launch prompt until its
bottle exists (a restart relaunches it from there); a start that fails because the start of
the previous process made the bottle after all adopts that bottle.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Callable

from bot_bottle.contrib.forge.base import ForgeNotFound, ForgeScopeError, ForgeValidationError
from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import log_tail
from bot_bottle.orchestrator.model import OrchestratorError, RunRecord, RunState

log = logging.getLogger(__name__)
PERMANENT_FORGE_ERRORS = (ForgeNotFound, ForgeValidationError, ForgeScopeError)

SIDECAR_HELP = (
    "\n\n---\nYou reach the forge only through the bot-bottle sidecar: HTTP over the Unix socket "
    "in $BOT_BOTTLE_FORGE_SOCKET with header `Authorization: Bearer $BOT_BOTTLE_FORGE_RUN_TOKEN`. "
    "Endpoints: GET /issues/{n}, GET /pulls/{n}, GET /issues/{n}/comments, "
    "POST /issues/{n}/comments {body}, PATCH /issues/{n} {body}, POST /pulls {title,body,head,base}. "
    "When finished you MUST POST /done {\"status\": \"done\"|\"blocked\"|\"failed\", \"summary\": \"...\"}.")


def launch_prompt(title: str, body: str, where: str = "") -> str:
    """`where` (e.g. "acme/widgets#7") tells the agent which issue it works on."""
    head = f"{where}: {title}" if where else title
    return f"{head}\n\n{body}{SIDECAR_HELP}"


def _thread_spawn(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, daemon=True).start()


class Executor:
    def __init__(self, store, runner, *, sidecar_socket: str, marker: str,
                 clock: Callable[[], float], spawn: Callable[[Callable[[], None]], None] = _thread_spawn,
                 on_slot_freed: Callable[[], None] = lambda: None, workspaces=None,
                 secret_values: tuple[str, ...] = (),
                 relay: Callable[[], object] = lambda: 0) -> None:
        self._store = store
        self._relay = relay  # one pass of the done relay (`Relay.tick`), before an exit
        self._runner = runner
        self._workspaces = workspaces  # None: the bottles' own repos/dirs are the workspace
        self._secret_values = tuple(secret_values)  # redacted from quoted logs (with run tokens)
        self._socket = sidecar_socket
        self._marker = marker
        self._clock = clock
        self._spawn = spawn
        self._on_slot_freed = on_slot_freed
        self._run_locks: dict[int, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, run_id: int) -> threading.RLock:
        # decisions for one run are serialised: a worker's BottleExited must not decide on a
        # state the dispatcher is about to change (e.g. while it freezes for a done signal)
        with self._locks_guard:
            return self._run_locks.setdefault(run_id, threading.RLock())

    def _env(self, run: RunRecord) -> dict[str, str]:
        return {"BOT_BOTTLE_FORGE_SOCKET": self._socket, "BOT_BOTTLE_FORGE_RUN_TOKEN": run.run_token}

    def apply(self, run: RunRecord, actions: list) -> RunRecord:
        """Execute `actions` for an existing run, in order; returns the run as it ends up."""
        for action in actions:
            run = self._one(run, action)
        return run

    def create(self, owner: str, repo: str, issue: int, action, prompt: str) -> RunRecord:
        state = RunState.STARTING if isinstance(action, L.Launch) else RunState.QUEUED
        # stored with the run until its bottle exists: a launch cut short is made again from
        # it (as the CLI gets it: a lone surrogate cannot be stored or passed on as is)
        prompt = prompt.encode("utf-8", "replace").decode("utf-8")
        run = self._store.create_run(owner, repo, issue, action.agent, action.bottles, state,
                                     secrets.token_urlsafe(32), self._clock(),
                                     launch_prompt=prompt)
        if state is RunState.STARTING:
            self._start(run, prompt)
        return run

    def _one(self, run: RunRecord, action) -> RunRecord:
        now = self._clock()
        if isinstance(action, L.Ignore):
            log.info("ignored: %s repo=%s issue=%s run=%s", action.reason, run.repo_full_name,
                     run.issue_number, run.id)
            return run
        if isinstance(action, L.StartQueued):
            run = self._store.transition(run.id, RunState.STARTING, now=now, reason="slot free")
            self._start(run, run.launch_prompt or "")
            return run
        if isinstance(action, L.Started):
            return self._store.transition(run.id, RunState.RUNNING, now=now, reason="started",
                                          slug=action.slug, launch_prompt=None)
        if isinstance(action, L.RecordSlug):
            return self._store.update_run(run.id, now=now, slug=action.slug)
        if isinstance(action, L.DestroyBottle):
            if run.slug != action.slug:  # so the start's end can destroy it again
                run = self._store.update_run(run.id, now=now, slug=action.slug)
            try:
                self._runner.destroy(action.slug)
            except OrchestratorError as exc:  # tried again when the start ends
                log.error("could not destroy bottle %s of destroyed run %s: %s", action.slug,
                          run.id, exc)
            return run
        if isinstance(action, L.Requeue):
            run = self._store.transition(run.id, RunState.QUEUED, now=now,
                                         reason="restarted before the bottle existed")
            self._on_slot_freed()
            return run
        if isinstance(action, L.Resume):
            run = self._store.transition(run.id, RunState.RESUMING, now=now, reason="resume",
                                         pending_prompt=None)
            self._spawn(lambda: self._blocking_resume(run, action.prompt))
            return run
        if isinstance(action, L.RememberPrompt):
            return self._store.update_run(run.id, now=now, pending_prompt=action.prompt)
        if isinstance(action, L.Freeze):
            if run.slug:
                self._runner.freeze(run.slug)
            run = self._store.transition(run.id, action.state, now=now, reason="freeze")
            self._on_slot_freed()
            return run
        if isinstance(action, L.RecordDone):
            return self._store.update_run(run.id, now=now, last_done_status=action.status,
                                          last_done_summary=action.summary)
        if isinstance(action, L.Destroy):
            if run.slug:
                self._runner.destroy(run.slug)
            run = self._store.transition(run.id, RunState.DESTROYED, now=now, reason="destroy")
            self._on_slot_freed()
            return run
        if isinstance(action, L.MarkFailed):
            run = self._store.transition(run.id, RunState.FAILED, now=now, reason=action.reason,
                                         error=action.reason)
            self._on_slot_freed()
            return run
        if isinstance(action, L.Comment):
            self._store.enqueue_comment(run.id, run.owner, run.repo, action.number,
                                        f"{action.body}\n\n{self._marker}", now)
            return run
        raise OrchestratorError(f"cannot execute {action!r} for an existing run")

    def _start(self, run: RunRecord, prompt: str) -> None:
        def work() -> None:
            def on_slug(slug: str) -> None:
                self.event(run.id, L.BottleCreated(slug))
            workspace = None
            try:
                if self._workspaces is not None:  # the clone runs here, never on the dispatcher
                    workspace = self._workspaces.prepare(run.owner, run.repo, run.label)
                result = self._runner.start(agent=run.agent, bottles=run.bottles, label=run.label,
                                            prompt=prompt, env=self._env(run), on_slug=on_slug,
                                            workspace=workspace)
            except Exception as exc:  # whatever went wrong, the run must not stay `starting`
                self._start_failed(run.id, exc)
                return
            finally:
                if workspace is not None:  # the CLI moves it into the bottle; else it is ours
                    self._workspaces.discard(workspace)
            self._exited(run, result)
        self._spawn(work)

    def _start_failed(self, run_id: int, exc: Exception) -> None:
        orphan = self._orphan_bottle(run_id)
        if orphan is not None:
            try:  # the bottle the previous process's start made: frozen, like at restart
                self.event(run_id, L.Restarted(orphan))
                return
            except Exception as failure:  # it could not be frozen
                exc = failure
        self._failed(run_id, exc)

    def _orphan_bottle(self, run_id: int) -> str | None:
        """After a failed start of a run a restart put back in the queue: the bottle under its
        label, if the start the previous process launched outlived it and made the bottle
        after all (this start then found the slug taken)."""
        try:
            run = self._store.get_run(run_id)
            requeued = any(e.kind == "transition" and e.detail.get("from") == "starting"
                           and e.detail.get("to") == "queued" for e in self._store.op_log(run_id))
            if run is None or run.state is not RunState.STARTING or run.slug or not requeued:
                return None
            return run.expected_slug if run.expected_slug in self._runner.bottle_states() else None
        except Exception:  # cannot tell: the start's own failure is reported
            log.exception("could not look for an orphaned bottle of run %s", run_id)
            return None

    def _blocking_resume(self, run: RunRecord, prompt: str) -> None:
        try:
            self._store.transition(run.id, RunState.RUNNING, now=self._clock(), reason="resumed")
            result = self._runner.resume(slug=run.slug, prompt=prompt, env=self._env(run))
        except Exception as exc:  # whatever went wrong, the run must not stay `resuming`
            self._failed(run.id, exc)
            return
        self._exited(run, result)

    def _exited(self, run: RunRecord, result) -> None:
        tail = self._log_tail(run, result.slug)
        self.event(run.id, L.BottleExited(result.exit_code, tail, result.timed_out, result.limit))

    def _log_tail(self, run: RunRecord, slug: str | None) -> str:
        """The bottle log's last lines, cleaned for a comment ("" when there is none)."""
        if not slug:
            return ""
        try:
            raw = self._runner.log_tail(slug, log_tail.LINES)
        except Exception as exc:  # a missing log must not lose the exit itself
            log.warning("no log tail for run %s (%s): %s", run.id, slug, exc)
            return ""
        return log_tail.clean(raw, (run.run_token, *self._secret_values))

    def _failed(self, run_id: int, exc: Exception) -> None:
        if not isinstance(exc, OrchestratorError):
            log.exception("bottle worker for run %s failed", run_id)
        try:
            run = self._store.get_run(run_id)
            tail = self._log_tail(run, run.slug) if run is not None else ""
            reason = log_tail.clean(str(exc) or type(exc).__name__,
                                    (run.run_token if run else "", *self._secret_values),
                                    lines=5, width=1000)
            self.event(run_id, L.RunnerFailed(reason, tail))
        except Exception:  # the store itself is failing: reconcile picks the run up on restart
            log.exception("could not record the failure of run %s", run_id)

    def event(self, run_id: int, event) -> RunRecord:
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
            run = self._store.get_run(run_id)
            return self.apply(run, L.decide(run, event))

    def apply_done(self, done) -> None:
        """Apply a relayed done event once: the dispatcher and a bottle's worker may both
        hold it, so it is checked and marked under the run's lock."""
        with self._lock(done.run_id):
            if not self._store.done_event_pending(done.id):
                return
            if self._store.get_run(done.run_id) is not None:
                self.event(done.run_id, L.DoneSignal(done.status, done.summary))
            self._store.mark_done_processed(done.id)

    def drain_outbox(self, forge_factory, now: float, backoff: float = 30.0) -> int:
        """Send due comments in order, each at most once in effect: every comment carries its
        outbox tag, and one whose earlier POST may have gone through (timeout, crash) is
        looked for before it is posted again. A refusal that cannot change (404, 422, out of
        scope) drops the comment; any other failure retries it later, waiting twice as long
        each time up to 32 × `backoff`, and defers the rest of this pass (the forge is likely
        down)."""
        sent = 0
        failure: str | None = None
        for item in self._store.due_outbox(now):
            delay = backoff * 2 ** min(item.attempts, 5)
            if failure is not None:
                self._store.mark_outbox_retry(item.id, now + backoff, failure)
                continue
            tag = outbox_tag(item.id)
            try:
                forge = forge_factory(item.owner, item.repo)
                if not (item.posting and any(tag in c.body for c in forge.read_comments(item.number))):
                    self._store.mark_outbox_posting(item.id, now)
                    forge.post_comment(item.number, f"{item.body}\n{tag}")
            except PERMANENT_FORGE_ERRORS as exc:
                log.error("dropping comment %s on %s/%s#%s: %s", item.id, item.owner, item.repo,
                          item.number, exc)
                self._store.mark_outbox_dropped(item.id, now, str(exc))
                continue
            except Exception as exc:  # ForgeError or I/O: retry later, never lose it
                failure = str(exc)
                self._store.mark_outbox_retry(item.id, now + delay, failure)
                continue
            self._store.mark_outbox_sent(item.id, now)
            sent += 1
        return sent


def outbox_tag(item_id: int) -> str:
    """An invisible tag that makes a posted outbox comment recognisable."""
    return f"<!-- bot-bottle:outbox={item_id} -->"
