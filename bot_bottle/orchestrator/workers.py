"""The blocking side of the lifecycle shell: a run's start (the clone of its repository, then
the core CLI) and its resumes, each on a thread of its own from an injected `spawn` (tests
pass a synchronous one) for as long as the agent runs (so their number follows the run slots,
`FORGE_MAX_CONCURRENT_RUNS`, and never takes a worker from the bottle operations' pool), and
how each ends, handed back as a lifecycle event through `decide_event` (the `Executor`'s
`event`), so the dispatcher never waits on a CLI. A resume asks `decide` first
(`AgentResumed`) and runs the CLI only if the run is `running` then.

A launch's worker first checks out the issue's repository (`workspace.Workspaces`, when
configured) and hands it to `start --workspace`. When the agent's process ends (or the runner
fails) the worker reads the bottle log's last lines and redacts our secrets from them before
raising the event, so `decide` stays pure. A start that fails because the start of the
previous process made the bottle after all adopts that bottle. The runs whose start is in
flight here are known (`starting`): a relaunch never races one. Each agent process (a start or a
resume) gets a number of its own (`process`), which its end carries, so `decide` can tell the
late end of a start whose bottle was frozen and resumed meanwhile from the end of the resume.
At most `starts_at_once` starts are between their first step (the clone) and their bottle's
slug line at a time; the others wait their turn on their own threads (`BOT_BOTTLE_STARTS_AT_ONCE`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import log_tail
from bot_bottle.orchestrator.run_log import agent_log_hint
from bot_bottle.orchestrator.model import OrchestratorError, RunRecord, RunState
from bot_bottle.orchestrator.runner import BottleExit, BottleGone, BottleRunner

log = logging.getLogger(__name__)


class _Once:
    """Calls `fn` the first time it is called, never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn, self._lock, self._done = fn, threading.Lock(), False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._fn()


class BottleWorkers:
    def __init__(self, store, runner: BottleRunner, *, decide_event: Callable[..., object],
                 sidecar_socket: str, clock: Callable[[], float],
                 spawn: Callable[[Callable[[], None]], None], workspaces=None,
                 secret_values: tuple[str, ...] = (), home: str | None = None,
                 starts_at_once: int = 2) -> None:
        self._store = store
        self._home = home  # $BOT_BOTTLE_HOME, for where an ended run's agent log is
        self._runner = runner
        # `decide_event(run_id, event, start_ended=False)`: decided under the run's lock
        self._decide_event = decide_event
        self._socket = sidecar_socket
        self._clock = clock
        self._spawn = spawn
        self._workspaces = workspaces  # None: the bottles' own repos/dirs are the workspace
        self._secret_values = tuple(secret_values)  # redacted from quoted logs (with run tokens)
        self._guard = threading.Lock()
        self._starting: set[int] = set()  # runs whose start is in flight in this process
        self._processes: dict[int, int] = {}  # run id -> number of its latest agent process
        self._numbers = itertools.count(1)  # never reused: processes of one run never share one
        # clones and CLIs that have not printed their slug yet: a launch storm would
        # otherwise take the CPU (and the GIL) from the webhook acks all at once
        self._starts = threading.Semaphore(starts_at_once)

    def starting(self, run_id: int) -> bool:
        """True while the run's start (clone, then the CLI) is in flight in this process."""
        with self._guard:
            return run_id in self._starting

    def process(self, run_id: int) -> int | None:
        """The number of the run's latest agent process begun here (None: none yet)."""
        with self._guard:
            return self._processes.get(run_id)

    def _next_process(self, run_id: int) -> int:
        with self._guard:
            number = self._processes[run_id] = next(self._numbers)
            return number

    def _process_ended(self, run_id: int, process: int) -> None:
        """Its end is decided: forget the number if no later process replaced it (a run keeps
        no entry between its agent's runs; the numbers only tell apart processes that overlap)."""
        with self._guard:
            if self._processes.get(run_id) == process:
                del self._processes[run_id]

    def start_ended(self, run_id: int) -> None:
        """Called under the run's lock with the start's last event, so a relaunch decided
        right after it is not refused."""
        with self._guard:
            self._starting.discard(run_id)

    def env(self, run: RunRecord) -> dict[str, str]:
        return {"BOT_BOTTLE_FORGE_SOCKET": self._socket, "BOT_BOTTLE_FORGE_RUN_TOKEN": run.run_token}

    def start(self, run: RunRecord, prompt: str) -> None:
        with self._guard:
            self._starting.add(run.id)
        process = self._next_process(run.id)

        def work() -> None:
            try:
                self._launch(run, prompt, process)
            finally:  # normally already done with the start's last event
                self.start_ended(run.id)
                self._process_ended(run.id, process)
        self._spawn(work)

    def resume(self, run: RunRecord, prompt: str) -> None:
        process = self._next_process(run.id)

        def work() -> None:
            try:
                self._resume(run, prompt, process)
            finally:
                self._process_ended(run.id, process)
        self._spawn(work)

    def _launch(self, run: RunRecord, prompt: str, process: int) -> None:
        gate = _Once(self._starts.release)
        self._starts.acquire()

        def on_slug(slug: str) -> None:
            gate()  # the bottle exists: the next start may begin its clone and CLI
            self._decide_event(run.id, L.BottleCreated(slug))
        workspace = None
        try:
            if self._workspaces is not None:  # the clone runs here, never on the dispatcher
                workspace = self._workspaces.prepare(run.owner, run.repo, run.label)
            result = self._runner.start(agent=run.agent, bottles=run.bottles, label=run.label,
                                        prompt=prompt, env=self.env(run), on_slug=on_slug,
                                        workspace=workspace)
        except Exception as exc:  # whatever went wrong, the run must not stay `starting`
            gate()
            self._start_failed(run.id, exc, process, prompt)
            return
        finally:
            gate()
            if workspace is not None:  # the CLI moves it into the bottle; else it is ours
                self._workspaces.discard(workspace)
        self._exited(run, result, process, start_ended=True)

    def _start_failed(self, run_id: int, exc: Exception, process: int, prompt: str) -> None:
        orphan = self._orphan_bottle(run_id)
        if orphan is not None:
            try:  # the bottle the previous process's start made: frozen, like at restart
                self._decide_event(run_id, L.Restarted(orphan), start_ended=True)
                return
            except Exception as failure:  # it could not be frozen
                exc = failure
        # a bottle its CLI removed again: the start can be made again from the same prompt
        again = prompt if isinstance(exc, BottleGone) else None
        self._failed(run_id, exc, process, start_ended=True, launch_prompt=again)

    def _orphan_bottle(self, run_id: int) -> str | None:
        """After a failed start of a run that went back to the queue (a restart, or a comment
        relaunching it): the bottle under its label, if an earlier start outlived the process
        that launched it and made the bottle after all (this start then found the slug taken).
        A run's first launch adopts nothing: a bottle with its label is not ours."""
        try:
            run = self._store.get_run(run_id)
            requeued = any(e.kind == "transition" and e.detail.get("to") == "queued"
                           for e in self._store.op_log(run_id))
            if run is None or run.state is not RunState.STARTING or run.slug or not requeued:
                return None
            return run.expected_slug if run.expected_slug in self._runner.bottle_states() else None
        except Exception:  # cannot tell: the start's own failure is reported
            log.exception("could not look for an orphaned bottle of run %s", run_id)
            return None

    def _resume(self, run: RunRecord, prompt: str, process: int) -> None:
        try:
            now = self._decide_event(run.id, L.AgentResumed())  # `decide` says it works again
            if now is None or now.state is not RunState.RUNNING:  # closed meanwhile, say
                log.info("run %s: not resumed, it is %s", run.id,
                         now.state.value if now is not None else "gone")
                return
            result = self._runner.resume(slug=run.slug, prompt=prompt, env=self.env(run))
        except Exception as exc:  # whatever went wrong, the run must not stay `resuming`
            self._failed(run.id, exc, process)
            return
        self._exited(run, result, process)

    def _exited(self, run: RunRecord, result: BottleExit, process: int, *,
                start_ended: bool = False) -> None:
        where = f"run {run.id} {run.repo_full_name}#{run.issue_number}"
        if result.timed_out:
            limit = f"{result.limit} s " if result.limit is not None else ""
            log.warning("%s: the agent was stopped at its %swall-time limit (exit code %s)%s",
                        where, limit, result.exit_code, agent_log_hint(self._home, result.slug))
        elif result.exit_code:
            log.warning("%s: the agent exited with code %s%s", where, result.exit_code,
                        agent_log_hint(self._home, result.slug))
        else:
            log.info("%s: the agent exited with code 0", where)
        tail = self._log_tail(run, result.slug)
        self._decide_event(run.id, L.BottleExited(result.exit_code, tail, result.timed_out,
                                                  result.limit, process),
                           start_ended=start_ended)

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

    def _failed(self, run_id: int, exc: Exception, process: int, *,
                start_ended: bool = False, launch_prompt: str | None = None) -> None:
        if not isinstance(exc, OrchestratorError):
            log.exception("bottle worker for run %s failed", run_id)
        try:
            run = self._store.get_run(run_id)
            tail = self._log_tail(run, run.slug) if run is not None else ""
            reason = log_tail.clean(str(exc) or type(exc).__name__,
                                    (run.run_token if run else "", *self._secret_values),
                                    lines=5, width=1000)
            where = (f"run {run_id} {run.repo_full_name}#{run.issue_number}" if run is not None
                     else f"run {run_id}")
            log.error("%s: could not run the agent: %s%s", where, reason,
                      agent_log_hint(self._home, run.slug if run is not None else None))
            self._decide_event(run_id, L.RunnerFailed(reason, tail, process, launch_prompt),
                               start_ended=start_ended)
        except Exception:  # the store itself is failing: reconcile picks the run up on restart
            log.exception("could not record the failure of run %s", run_id)
