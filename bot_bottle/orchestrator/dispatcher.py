"""The `Orchestrator`: turns what the store holds into lifecycle decisions, off the request
thread. One dispatcher thread, woken by the webhook server and the relay, takes stored
deliveries in arrival order (parse → target/trust → `lifecycle.decide` through the
`Executor`), then undrained done signals, then hands free slots to queued runs, then sends
due comments from the outbox (`outbox.drain`). `reconcile()` runs once at start-up, before the
thread. The pass never waits on a bottle: freezes, destroys and starts are the executor's
workers'.

Decisions worth knowing:
- each step of a pass, and each run within a step, is guarded: one run's failure is logged
  and the pass goes on for the others (a delivery that fails is stored as `error`, a done
  signal is marked applied once handed over);
- a delivery is marked processed only after its decision has been applied, so a crash
  re-reads it; replays are harmless because a launch for an issue that has a run is ignored
  and `decide` ignores events that do not fit the run's state;
- while the forge is unreachable (membership or permission checks fail), the delivery stays
  pending and the pass stops, so later deliveries never overtake it;
- a comment author in the agent org, or a comment carrying our marker, is the agent itself.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Collection

from bot_bottle.contrib.forge.base import ForgeError, ForgeUnavailable
from bot_bottle.orchestrator import events as E
from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator import outbox
from bot_bottle.orchestrator import targeting as T
from bot_bottle.orchestrator.executor import Executor
from bot_bottle.orchestrator.prompts import launch_prompt
from bot_bottle.orchestrator.model import WORKING_STATES, OrchestratorError, RunState

log = logging.getLogger(__name__)
# outcomes that changed nothing (no run, no comment): safe to repeat after a crash
INERT_OUTCOMES = frozenset({"ignored", "bad_shape"})
# the bulk of a busy forge's deliveries (every comment on every issue): logged at DEBUG
NO_LIVE_RUN = "comment on an issue or PR without a live run"
LAUNCH_ACTIONS = ("opened", "assigned", "label_updated", "labeled", "edited", "reopened")


def agents_in(home: str | Path) -> Callable[[], list[str]]:
    """The agents an operator has installed (read on each launch: adding one needs no restart)."""
    agents_dir = Path(home) / "agents"
    return lambda: sorted(p.stem for p in agents_dir.glob("*.toml"))


class Orchestrator:
    def __init__(self, store, executor: Executor, runner, forge_factory: Callable[[str, str], object],
                 *, org: str, known_agents: Callable[[], Collection[str]], max_concurrent: int,
                 clock: Callable[[], float], retry_interval: float = 2.0,
                 outbox_backoff: float = 30.0) -> None:
        self._store = store
        self._executor = executor
        self._runner = runner
        self._forge_factory = forge_factory
        self._org = org
        self._known_agents = known_agents
        self._max = max_concurrent
        self._clock = clock
        self._retry = retry_interval
        self._outbox_backoff = outbox_backoff
        self._wake = threading.Event()
        self._pass_lock = threading.Lock()
        # filled by the webhook (bootstrap), taken here; a lagging dispatcher parses the rest
        # itself, so the bound only trades CPU for memory (~40 KB a parsed 8.7 KB comment)
        self.payloads = E.Payloads(limit=64)
        # the last delivery this process handled: its lazily marked ones are not read again
        # before their mark commits (a restart starts over and finds them pending, if so)
        self._handled = 0

    # ---- threads ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop_event: threading.Event, coalesce: float = 0.05,
            beat: Callable[[], None] = lambda: None) -> None:
        """Passes until `stop_event`; `beat()` after each (the systemd watchdog's heartbeat)."""
        while not stop_event.is_set():
            if self._wake.wait(self._retry):
                # a burst wakes us per delivery: gather it into one pass (a few queries for
                # many deliveries) at the cost of `coalesce` seconds of launch latency
                stop_event.wait(coalesce)
            self._wake.clear()
            if stop_event.is_set():
                break
            try:
                self.process_pending()
            except Exception:  # the next pass retries; one bad pass must not stop dispatch
                log.exception("dispatch pass failed")
            beat()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` s until no bottle operation (freeze, destroy, opening a PR)
        is queued, running or waiting for a retry; whether none is."""
        return self._executor.wait_idle(timeout)

    def close(self, grace: float = 0.0) -> bool:
        """The process is ending: bottle operations waiting for a retry are dropped (a
        restart's reconcile decides on their runs again); those running get `grace` s."""
        return self._executor.close(grace)

    def on_watchdog(self, run, idle: float) -> None:
        self._executor.event(run.id, L.WatchdogExpired(idle))

    # ---- one pass --------------------------------------------------------------------------

    def process_pending(self) -> None:
        with self._pass_lock:
            for name, step in (("deliveries", self._all_deliveries),
                               ("done signals", self._done_events),
                               ("slots", self._fill_slots), ("outbox", self._drain_outbox)):
                try:
                    step()
                except Exception:  # the other steps still run: launches, comments, dones
                    log.exception("dispatch step %s failed", name)

    def _all_deliveries(self) -> None:
        while self._deliveries():  # a backlog drains now, not one batch per wake-up
            pass

    def _drain_outbox(self) -> None:
        outbox.drain(self._store, self._forge_factory, self._clock(), self._outbox_backoff)

    def _deliveries(self, batch: int = 100) -> bool:
        """One batch in arrival order; True when a full batch was done (more may wait)."""
        pending = self._store.pending_deliveries(batch, after=self._handled)
        inert: list[tuple[int, str]] = []  # handled without effects: marked together
        try:
            for delivery in pending:
                if not self._one_delivery(delivery, inert):
                    return False
                self._handled = delivery.seq
        finally:
            if inert:  # lazily: lost in a crash, they are handled again the same way
                self._store.mark_deliveries_processed(inert, lazily=True)
        return len(pending) == batch

    def _one_delivery(self, delivery, inert: list[tuple[int, str]]) -> bool:
        """Handle one delivery; False when the forge is down and the pass must stop."""
        try:
            outcome, why = self._handle_delivery(delivery)
        except ForgeUnavailable as exc:
            log.warning("forge unavailable, delivery %s retried later: %s",
                        delivery.delivery_id, exc)
            return False
        except (ForgeError, OrchestratorError) as exc:
            outcome, why = "error", str(exc)
        except Exception as exc:  # a poison delivery must not block every later one
            log.exception("delivery %s could not be handled", delivery.delivery_id)
            outcome, why = "error", f"{type(exc).__name__}: {exc}"
        # the stored outcome is a small fixed vocabulary (it labels /metrics); why is logged
        level = (logging.ERROR if outcome == "error" else
                 logging.DEBUG if why == NO_LIVE_RUN else logging.INFO)
        log.log(level, "delivery %s (%s): %s: %s", delivery.delivery_id, delivery.event_type,
                outcome, why)
        if outcome in INERT_OUTCOMES:
            inert.append((delivery.seq, outcome))
        else:  # it changed something: record that at once, so a crash never repeats it
            self._store.mark_delivery_processed(delivery.seq, outcome)
        return True

    def _handle_delivery(self, delivery) -> tuple[str, str]:
        # the webhook's parse of this very body, when this process received it
        payload = self.payloads.take(delivery.delivery_id, delivery.body)
        try:
            event = E.classify_delivery(delivery.event_type, delivery.body, payload)
        except E.EventShapeError as exc:
            return "bad_shape", str(exc)
        if isinstance(event, str):
            return "ignored", event
        if isinstance(event, E.IssueEvent):
            return self._issue(event)
        if isinstance(event, E.CommentEvent):
            return self._comment(event)
        return self._pull_request(event)

    def _issue(self, ev: E.IssueEvent) -> tuple[str, str]:
        run = self._store.live_run_for_issue(ev.owner, ev.repo, ev.number)
        if ev.action == "closed":
            if run is None:
                return "ignored", "closed issue has no live run"
            # only a writer's close destroys work (an issue's author may close it too)
            forge = self._forge_factory(ev.owner, ev.repo)
            writer = forge.user_permission(ev.sender) in T.WRITE_PERMISSIONS
            self._executor.event(run.id, L.IssueClosed(by_writer=writer, closer=ev.sender))
            return "closed", f"run {run.id} by {ev.sender} (write access: {writer})"
        if ev.action not in LAUNCH_ACTIONS:
            return "ignored", f"issue action {ev.action}"
        forge = self._forge_factory(ev.owner, ev.repo)
        target = T.launch_target(ev, org=self._org, is_org_member=forge.is_org_member,
                                 known_agents=self._known_agents())
        if isinstance(target, T.LaunchRejected):
            if target.comment and run is None:
                self._store.enqueue_comment(None, ev.owner, ev.repo, ev.number,
                                            T.marked(target.comment), self._clock())
            return "rejected", f"{ev.owner}/{ev.repo}#{ev.number}: {target.reason}"
        # one run per issue, ever: a destroyed run also blocks a relaunch
        existing = run or self._store.latest_run_for_issue(ev.owner, ev.repo, ev.number)
        actions = L.decide(existing, L.LaunchRequested(target.agent, target.bottles,
                                                       slot_free=self._slot_free()))
        action = actions[0]
        if isinstance(action, L.Ignore):
            return "ignored", action.reason
        created = self._executor.create(ev.owner, ev.repo, ev.number, action,
                                        launch_prompt(ev.title, ev.body,
                                                      f"{ev.owner}/{ev.repo}#{ev.number}"))
        return ("launched" if created.state is RunState.STARTING else "queued"), f"run {created.id}"

    def _comment(self, ev: E.CommentEvent) -> tuple[str, str]:
        run = (self._store.run_for_pr(ev.owner, ev.repo, ev.number) if ev.is_pull else None) \
            or self._store.live_run_for_issue(ev.owner, ev.repo, ev.number)
        if run is None or run.state is RunState.DESTROYED:
            return "ignored", NO_LIVE_RUN
        forge = self._forge_factory(ev.owner, ev.repo)
        trust = T.comment_trust(ev, agent_logins=_OrgMembers(forge, self._org),
                                permission=forge.user_permission)
        if trust is T.Trust.STOP:
            self._executor.event(run.id, L.StopRequested())
        elif trust is T.Trust.TRUSTED:
            self._executor.event(run.id, L.TrustedComment(ev.body))
        else:
            return "ignored", (f"{trust.value} comment {ev.comment_id} by {ev.author} on "
                               f"{ev.owner}/{ev.repo}#{ev.number}")
        self._store.append_op(run.id, "comment", {"author": ev.author, "trust": trust.value,
                                                  "comment_id": ev.comment_id}, self._clock())
        return trust.value, f"comment {ev.comment_id} by {ev.author} for run {run.id}"

    def _pull_request(self, ev: E.PullRequestEvent) -> tuple[str, str]:
        if ev.action != "closed":
            return "ignored", f"pull request action {ev.action}"
        run = self._store.run_for_pr(ev.owner, ev.repo, ev.number)
        if run is None:
            return "ignored", f"PR {ev.owner}/{ev.repo}#{ev.number} has no run"
        self._executor.event(run.id, L.PrClosed(ev.merged))
        return "closed", f"run {run.id} (merged={ev.merged})"

    def _done_events(self) -> None:
        for done in self._store.pending_done_events():
            try:  # unless the run's worker applied it meanwhile
                self._executor.apply_done(done)
            except Exception:  # the store failed for this one: the others still go
                log.exception("done signal %s of run %s failed", done.id, done.run_id)

    def _slot_free(self) -> bool:
        return self._store.slot_holders() < self._max

    def _fill_slots(self) -> None:
        tried: set[int] = set()
        while self._slot_free():
            run = self._store.oldest_queued_run()
            if run is None or run.id in tried:  # a run that cannot start waits for the next pass
                return
            tried.add(run.id)
            try:
                self._executor.event(run.id, L.SlotAvailable())
            except Exception:
                log.exception("run %s could not take a free slot", run.id)
                return

    # ---- start-up --------------------------------------------------------------------------

    def reconcile(self) -> list[int]:
        """Runs left working by a previous process have lost their waiter; `decide` says what
        becomes of each (`Restarted`): one whose bottle exists is frozen (a trusted comment
        resumes it), a `starting` one whose bottle was never made goes back to the queue with
        its launch prompt. A run's done signals relayed before the crash are applied first
        (one comment, the done one). Queued runs, pending deliveries and other done signals
        are left to the first pass. When the bottles cannot be listed nothing is decided on a
        guess: the watchdog ends what stays stuck."""
        stale = self._store.list_runs(states=WORKING_STATES)
        if not stale:
            return []
        try:
            bottles = self._runner.bottle_states()
        except OrchestratorError as exc:
            log.error("reconcile: cannot list bottles, runs left as they are: %s", exc)
            return []
        handled = []
        for run in stale:
            slug = run.expected_slug
            try:
                if run.slug:  # an agent that signalled done before the crash: its story
                    for done in self._store.pending_done_events(run.id):
                        self._executor.apply_done(done)
                # a freeze runs on a worker; if it fails, `decide` fails the run (`OpFailed`)
                self._executor.event(run.id, L.Restarted(slug if slug in bottles else None))
            except Exception:  # one run's trouble must not keep the others as they are
                log.exception("reconcile: run %s could not be decided on", run.id)
                continue
            handled.append(run.id)
        return handled


class _OrgMembers:
    """A lazily checked `in` over the agent org, so trust asks the forge only when needed,
    and once per login (Gitea logins are case-insensitive)."""

    def __init__(self, forge, org: str) -> None:
        self._forge, self._org = forge, org
        self._known: dict[str, bool] = {}

    def __contains__(self, login: object) -> bool:
        if not isinstance(login, str):
            return False
        key = login.casefold()
        if key not in self._known:
            self._known[key] = self._forge.is_org_member(self._org, login)
        return self._known[key]
