"""The run lifecycle's functional core: `decide(run, event) -> list[Action]`.

Inputs are events already classified by targeting (launch requested, trusted comment, stop,
PR/issue closed, done signal, watchdog expiry, bottle exit, runner failure, a free slot,
a start's bottle created, the orchestrator restarted while the run worked, a resume begun,
a bottle operation ended) and what the executor has under way for the run (`InFlight`).
Outputs are frozen action values that the executor carries out. All are defined in
`lifecycle_events` and re-exported here. `decide` does no I/O and reads no clock; it is
tested table-driven. It is the one place a run's next state is chosen.

Decisions worth knowing:
- a freeze runs on a worker: the run stays working until it ends (`OpSucceeded`: `frozen`
  or `timed_out`, then a remembered comment resumes it), and while it is under way no second
  freeze is asked and the exit it causes is not taken for an agent's own exit; a freeze that
  failed every attempt (`OpFailed`) fails the run, with a comment saying why;
- a destroy is the state at once; the bottle goes on a worker (`DestroyBottle`), and a bottle
  that cannot be removed is said on the issue;
- a bottle exiting without a done signal is frozen with `last_done_status = "exited:<code>"`
  (state `frozen`, so a trusted comment can resume it); one the core stopped at its wall-time
  limit ends `timed_out` (also resumable); their comments quote the bottle log's last lines
  (carried in the event, fetched by the worker); a late done signal for an already
  frozen run still records its status and comments, without a second freeze (the executor
  applies the run's relayed done signals before an exit, so an agent that signals done and
  exits gets the one done comment);
- a done signal with status `done` for a run without a PR also opens one (`OpenPr`: the
  executor opens it when the run's branch on Gitea has commits the default branch lacks, as the
  git gate delivered them); the done comment goes to the issue then, later ones to the PR;
- a trusted comment while the bottle runs is remembered (`pending_prompt`) and used to resume
  right after the next freeze;
- one run per issue, ever: a launch request for an issue with any run is ignored; but a run
  that failed (or was stopped) before it had a bottle — a clone while Gitea was down, a
  refused start — is launched again by a trusted comment, with its launch prompt followed by
  the comment (failure comments say "Comment to retry."), never while that failed start is
  still in flight in this process (`InFlight.starting`: the issue is told to retry later);
- the issue closing only destroys a run without a PR; a run with a PR waits for the PR;
  a run destroyed while `starting` destroys the bottle its start makes, when its slug comes
  and again when the start ends; a run stopped (or failed by the watchdog) while `starting`
  freezes that bottle when its slug comes, so its agent really stops;
- after a restart a working run whose bottle exists is frozen (a comment resumes it); a
  `starting` one whose bottle was never made goes back to the queue with its launch prompt.
"""

from __future__ import annotations

# the events and actions live in `lifecycle_events`; re-exported so callers use `L.<Name>`
from bot_bottle.orchestrator.lifecycle_events import (  # noqa: F401
    BOTTLE_OPS, IDLE, Action, AgentResumed, BottleCreated, BottleExited, Comment, Destroy,
    DestroyBottle, DoneSignal, Event, ForgetBottle, Freeze, FreezeBottle, Ignore, InFlight,
    IssueClosed, Launch, LaunchRequested, MarkFailed, MarkFrozen, OpenPr, OpFailed, OpSucceeded, PrClosed, Queue,
    RecordDone, RecordSlug, Relaunch, RememberPrompt, Requeue, Restarted, Resume, RunnerFailed,
    SlotAvailable, StartQueued, Started, StopRequested, TrustedComment, WatchdogExpired)
from bot_bottle.orchestrator.log_tail import quote
from bot_bottle.orchestrator.model import ALLOWED_TRANSITIONS, WORKING_STATES, RunRecord, RunState
from bot_bottle.orchestrator.prompts import relaunch_prompt

_WORKING = WORKING_STATES
_RESUMABLE = (RunState.FROZEN, RunState.TIMED_OUT, RunState.FAILED)
# states a run may end in without a bottle: failed before one existed, stopped while starting
_RELAUNCHABLE = (RunState.FAILED, RunState.FROZEN)


def _target(run: RunRecord) -> int:
    return run.pr_number if run.pr_number is not None else run.issue_number


def _after_freeze(run: RunRecord) -> list[Action]:
    return [Resume(run.pending_prompt)] if run.pending_prompt else []


def _freeze(run: RunRecord, busy: InFlight, state: RunState = RunState.FROZEN) -> list[Action]:
    """Stop a working run: its bottle frozen on a worker (the state follows when that ends),
    nothing more while a freeze is already under way, the state at once without a bottle."""
    if busy.freezing:
        return []
    return [Freeze(state)] if run.slug else [MarkFrozen(state)]


def _with_log(body: str, log_tail: str) -> str:
    """`body` followed by the bottle log's last lines, when there are any."""
    return f"{body}\n\nLast lines of the bottle's log:\n\n{quote(log_tail)}" if log_tail else body


def decide(run: RunRecord | None, event: Event, busy: InFlight = IDLE) -> list[Action]:
    """The actions for `event` on `run` (None: no run for the issue yet); `busy` is what the
    executor has under way for the run (a start, a freeze), which the store does not know."""
    if isinstance(event, LaunchRequested):
        if run is not None:
            return [Ignore(f"issue already had run {run.id} ({run.state.value}); one run per issue")]
        if event.slot_free:
            return [Launch(event.agent, event.bottles)]
        return [Queue(event.agent, event.bottles)]
    if run is None:
        return [Ignore("no run for this issue or PR")]
    if run.state is RunState.DESTROYED:
        return _destroyed(run, event)
    state = run.state

    if isinstance(event, BottleCreated):
        if state is RunState.STARTING:
            return [Started(event.slug)]
        if state in _RESUMABLE and not run.slug:
            # stopped or failed (watchdog) while starting: its agent must not work on unseen;
            # the bottle is frozen and kept with the run, so a comment resumes it and a close
            # destroys it
            return [FreezeBottle(event.slug)]
        return [Ignore(f"bottle {event.slug} created for a {state.value} run")]

    if isinstance(event, Restarted):
        if state in _WORKING and busy.freezing:  # its done signal, relayed before the crash
            return [Ignore("restart: the bottle is being frozen already")]
        return _restarted(run, event)

    if isinstance(event, SlotAvailable):
        return [StartQueued()] if state is RunState.QUEUED else [Ignore("run is not queued")]

    if isinstance(event, TrustedComment):
        if state in _WORKING:
            return [RememberPrompt(event.body)]
        if state in _RESUMABLE and run.slug:
            return [Resume(event.body)]
        if state in _RELAUNCHABLE and not run.slug and run.launch_prompt is not None:
            if busy.starting:  # the watchdog gave up on a start that still runs: never two
                return [Comment(run.issue_number, "The earlier start of this run has not "
                                "ended yet, so it is not started again now. Comment again "
                                "later to retry.")]
            # it never had a bottle (say the clone failed while Gitea was down): make it now
            return [Relaunch(relaunch_prompt(run.launch_prompt, event.body))]
        return [Ignore(f"cannot resume a {state.value} run without a bottle")]

    if isinstance(event, StopRequested):
        if state in _WORKING and busy.freezing:
            return [Ignore("stop: the bottle is being frozen already")]
        if state in _WORKING:
            return [*_freeze(run, busy), RecordDone("stopped", "stopped by /bot-bottle stop"),
                    Comment(_target(run), "Stopped and frozen on request.")]
        return [Ignore(f"nothing to stop: run is {state.value}")]

    if isinstance(event, PrClosed):
        return _destroy(run)

    if isinstance(event, IssueClosed):
        if run.pr_number is not None:
            return [Ignore(f"run has PR #{run.pr_number}; it is destroyed when the PR closes")]
        if event.by_writer:
            return _destroy(run)
        return _kept_on_close(run, event, busy)

    if isinstance(event, DoneSignal):
        summary = event.summary or "(no summary)"
        body = f"Agent finished with status **{event.status}**:\n\n{summary}"
        # an agent that pushed its branch through the git gate but opened no PR gets one
        deliver = [OpenPr()] if event.status == "done" and run.pr_number is None else []
        record = [RecordDone(event.status, event.summary), *deliver, Comment(_target(run), body)]
        if state in _WORKING:  # a pending prompt resumes it once the freeze has ended
            return [*_freeze(run, busy), *record]
        if state is RunState.FROZEN:  # the bottle exited before its done signal was relayed
            return [*record, *_after_freeze(run)]
        return [Ignore(f"done signal for a {state.value} run")]

    if isinstance(event, WatchdogExpired):
        if state in _WORKING and busy.freezing:
            return [Ignore("watchdog: the bottle is being frozen")]
        if state in (RunState.STARTING, RunState.RESUMING):
            # the CLI never got the agent going (a hung clone, say): free the slot and say so
            reason = f"the bottle did not start within {int(event.idle_seconds)} s"
            if run.slug:  # a bottle exists: freeze it, so a comment can retry from it
                return [*_freeze(run, busy), RecordDone("timed_out", reason),
                        Comment(_target(run), f"{reason}; it is frozen. Comment to retry.")]
            return [MarkFailed(reason), Comment(_target(run), f"{reason}; the run failed.")]
        if state is RunState.RUNNING:
            return [*_freeze(run, busy, RunState.TIMED_OUT),
                    Comment(_target(run), f"No progress for {int(event.idle_seconds)} s: "
                            "the bottle was stopped and frozen. Comment to resume it.")]
        return [Ignore(f"watchdog: run is {state.value}")]

    if isinstance(event, (BottleExited, RunnerFailed)) and _earlier(event, busy):
        return [Ignore(f"the end of agent process {event.process}; process {busy.process} "
                       "of the run is the current one")]

    if isinstance(event, BottleExited):
        if state in _WORKING and busy.freezing:  # the freeze stopped it: its end decides
            return [Ignore(f"bottle exit {event.code} while its freeze is under way")]
        if state in _WORKING and event.timed_out:
            # the core stopped the agent at its wall-time limit: frozen, a comment resumes it
            limit = f"{event.limit} s " if event.limit is not None else ""
            reason = f"the agent ran past its {limit}wall-time limit"
            # `timed_out` follows only `running` in the transition table (a run is `running`
            # once the CLI printed its slug, so this is the case that happens)
            frozen = RunState.TIMED_OUT if state is RunState.RUNNING else RunState.FROZEN
            return [*_freeze(run, busy, frozen), RecordDone("timed_out", reason),
                    Comment(_target(run), _with_log(
                        f"Stopped: {reason}; the bottle is frozen. Comment to resume it.",
                        event.log_tail))]
        if state in _WORKING:
            status = f"exited:{event.code}"
            return [*_freeze(run, busy), RecordDone(status, ""),
                    Comment(_target(run), _with_log(
                        f"The agent exited (code {event.code}) without signalling done; the "
                        "bottle is frozen. Comment to resume it.", event.log_tail))]
        return [Ignore(f"bottle exit {event.code} after the run left the working states")]

    if isinstance(event, RunnerFailed):
        if state in (RunState.QUEUED, *_WORKING):
            # a comment resumes its bottle, or relaunches a run that has none (never had, or
            # whose start removed it again)
            forget = [ForgetBottle(event.launch_prompt)] if event.launch_prompt is not None else []
            retry = ("\n\nComment to retry." if forget or run.slug or run.launch_prompt is not None
                     else "")
            return [*forget, MarkFailed(event.reason),
                    Comment(run.issue_number, _with_log(
                        f"Could not run the agent: {event.reason}{retry}", event.log_tail))]
        return [Ignore(f"runner failure for a {state.value} run: {event.reason}")]

    if isinstance(event, AgentResumed):
        if state is RunState.RESUMING and run.slug:
            return [Started(run.slug)]
        return [Ignore(f"resume began for a {state.value} run")]

    if isinstance(event, OpSucceeded):
        return _op_succeeded(run, event)

    if isinstance(event, OpFailed):
        return _op_failed(run, event)

    raise TypeError(f"unknown event {event!r}")


def _earlier(event: BottleExited | RunnerFailed, busy: InFlight) -> bool:
    """The event ends an agent process that a later one (a resume) has replaced."""
    return (event.process is not None and busy.process is not None
            and event.process != busy.process)


def _destroy(run: RunRecord) -> list[Action]:
    return [Destroy(), *([DestroyBottle(run.slug)] if run.slug else [])]


def _op_succeeded(run: RunRecord, event: OpSucceeded) -> list[Action]:
    action = event.action
    if isinstance(action, Freeze) and run.state in _WORKING:
        # `timed_out` follows only `running`: a run that was starting or resuming is `frozen`
        target = (action.state if action.state in ALLOWED_TRANSITIONS[run.state]
                  else RunState.FROZEN)
        return [MarkFrozen(target), *_after_freeze(run)]
    return [Ignore(f"{type(action).__name__} done for a {run.state.value} run")]


def _op_failed(run: RunRecord, event: OpFailed) -> list[Action]:
    """A bottle operation that failed every attempt: a working run whose bottle could not be
    frozen fails (its slot is freed); otherwise the issue is told what is left to do."""
    action, tries = event.action, f"{event.attempts} attempt{'s' * (event.attempts != 1)}"
    if isinstance(action, Freeze):
        if run.state not in _WORKING:
            return [Ignore(f"freeze failed for a {run.state.value} run: {event.reason}")]
        reason = f"could not freeze the bottle ({tries}): {event.reason}"
        return [MarkFailed(reason),
                Comment(run.issue_number, f"Could not freeze the bottle ({tries}): "
                        f"{event.reason}\n\nThe run failed.")]
    if isinstance(action, FreezeBottle):
        return [Comment(run.issue_number, f"Could not freeze the bottle `{action.slug}` that "
                        f"the run's start made after it was stopped ({tries}): "
                        f"{event.reason}")]
    if isinstance(action, OpenPr):
        return [Comment(run.issue_number, "Could not open a pull request for the agent's "
                        f"branch ({tries}): {event.reason}")]
    return [Ignore(f"{type(action).__name__} failed for a {run.state.value} run: "
                   f"{event.reason}")]


def _kept_on_close(run: RunRecord, event: IssueClosed, busy: InFlight) -> list[Action]:
    """A close by someone without write access (say, the issue's author) destroys nothing:
    a working run is frozen, any other left as is, and the issue says why."""
    closer = f"@{event.closer}" if event.closer else "someone"
    comment = Comment(run.issue_number,
                      f"This issue was closed by {closer}, who lacks write access to the "
                      f"repository, so run {run.id} was kept (frozen, not destroyed). Someone "
                      "with write access can close the issue again to destroy it.")
    if run.state in _WORKING:
        who = event.closer or "someone"
        return [*_freeze(run, busy),
                RecordDone("kept", f"closed by {who}, who lacks write access"), comment]
    return [comment]


def _destroyed(run: RunRecord, event: Event) -> list[Action]:
    # closed while starting: the start in flight makes its bottle after all; destroy it as
    # soon as its slug is known, and again once the start ends (it may write after that)
    if isinstance(event, BottleCreated):
        return [DestroyBottle(event.slug)]
    if isinstance(event, BottleExited) and run.slug:
        return [DestroyBottle(run.slug)]
    if isinstance(event, OpFailed) and isinstance(event.action, DestroyBottle):
        slug = event.action.slug
        return [Comment(run.issue_number, f"Could not remove the bottle `{slug}` of this run "
                        f"({event.attempts} attempt{'s' * (event.attempts != 1)}): "
                        f"{event.reason}\n\nAn operator can remove it with "
                        f"`bot-bottle destroy {slug}`.")]
    return [Ignore(f"run {run.id} is destroyed")]


def _restarted(run: RunRecord, event: Restarted) -> list[Action]:
    state = run.state
    if state not in _WORKING:
        return [Ignore(f"restart: run is {state.value}")]
    if event.slug is not None:  # its bottle outlived us: frozen, so a comment resumes it
        adopt = [RecordSlug(event.slug)] if run.slug != event.slug else []
        return [*adopt, Freeze(), RecordDone("interrupted", ""),
                Comment(_target(run), "The orchestrator restarted while the agent worked; "
                        "the bottle is frozen. Comment to resume it.")]
    if state is RunState.STARTING and run.launch_prompt is not None:
        return [Requeue()]  # the bottle was never made: make it now
    reason = ("no bottle after restart" if state is RunState.STARTING
              else "the bottle is gone after restart")
    return [MarkFailed(reason),
            Comment(_target(run), "The orchestrator restarted and found no bottle for this "
                    "run; the run failed.")]

