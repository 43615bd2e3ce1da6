"""The run lifecycle's functional core: `decide(run, event) -> list[Action]`.

Inputs are events already classified by targeting (launch requested, trusted comment, stop,
PR/issue closed, done signal, watchdog expiry, bottle exit, runner failure, a free slot).
Outputs are frozen action values that the executor (the `Orchestrator` shell) carries out.
`decide` does no I/O and reads no clock; it is tested table-driven.

Decisions worth knowing:
- a bottle exiting without a done signal is frozen with `last_done_status = "exited:<code>"`
  (state `frozen`, so a trusted comment can resume it); a late done signal for an already
  frozen run still records its status and comments, without a second freeze;
- a trusted comment while the bottle runs is remembered (`pending_prompt`) and used to resume
  right after the next freeze;
- one run per issue, ever: a launch request for an issue with any run is ignored;
- the issue closing only destroys a run without a PR; a run with a PR waits for the PR.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot_bottle.orchestrator.model import RunRecord, RunState

# ---- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequested:
    agent: str
    bottles: tuple[str, ...]
    slot_free: bool


@dataclass(frozen=True)
class SlotAvailable:
    """A running slot freed; offered to the oldest queued run."""


@dataclass(frozen=True)
class TrustedComment:
    body: str


@dataclass(frozen=True)
class StopRequested:
    pass


@dataclass(frozen=True)
class PrClosed:
    merged: bool


@dataclass(frozen=True)
class IssueClosed:
    pass


@dataclass(frozen=True)
class DoneSignal:
    status: str  # done | blocked | failed
    summary: str


@dataclass(frozen=True)
class WatchdogExpired:
    idle_seconds: float


@dataclass(frozen=True)
class BottleExited:
    code: int


@dataclass(frozen=True)
class RunnerFailed:
    reason: str


Event = (LaunchRequested | SlotAvailable | TrustedComment | StopRequested | PrClosed
         | IssueClosed | DoneSignal | WatchdogExpired | BottleExited | RunnerFailed)

# ---- outputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """Create the run (if new) in `starting` and start its bottle."""
    agent: str
    bottles: tuple[str, ...]


@dataclass(frozen=True)
class Queue:
    agent: str
    bottles: tuple[str, ...]


@dataclass(frozen=True)
class StartQueued:
    pass


@dataclass(frozen=True)
class Resume:
    prompt: str


@dataclass(frozen=True)
class RememberPrompt:
    prompt: str


@dataclass(frozen=True)
class Freeze:
    """runner.freeze(slug), then state `frozen` (or `timed_out`)."""
    state: RunState = RunState.FROZEN


@dataclass(frozen=True)
class RecordDone:
    status: str
    summary: str


@dataclass(frozen=True)
class Destroy:
    pass


@dataclass(frozen=True)
class MarkFailed:
    reason: str


@dataclass(frozen=True)
class Comment:
    number: int
    body: str


@dataclass(frozen=True)
class Ignore:
    reason: str


Action = (Launch | Queue | StartQueued | Resume | RememberPrompt | Freeze | RecordDone
          | Destroy | MarkFailed | Comment | Ignore)

_WORKING = (RunState.STARTING, RunState.RUNNING, RunState.RESUMING)
_RESUMABLE = (RunState.FROZEN, RunState.TIMED_OUT, RunState.FAILED)


def _target(run: RunRecord) -> int:
    return run.pr_number if run.pr_number is not None else run.issue_number


def _after_freeze(run: RunRecord) -> list[Action]:
    return [Resume(run.pending_prompt)] if run.pending_prompt else []


def decide(run: RunRecord | None, event: Event) -> list[Action]:
    if isinstance(event, LaunchRequested):
        if run is not None:
            return [Ignore(f"issue already had run {run.id} ({run.state.value}); one run per issue")]
        if event.slot_free:
            return [Launch(event.agent, event.bottles)]
        return [Queue(event.agent, event.bottles)]
    if run is None:
        return [Ignore("no run for this issue or PR")]
    if run.state is RunState.DESTROYED:
        return [Ignore(f"run {run.id} is destroyed")]
    state = run.state

    if isinstance(event, SlotAvailable):
        return [StartQueued()] if state is RunState.QUEUED else [Ignore("run is not queued")]

    if isinstance(event, TrustedComment):
        if state in _WORKING:
            return [RememberPrompt(event.body)]
        if state in _RESUMABLE and run.slug:
            return [Resume(event.body)]
        return [Ignore(f"cannot resume a {state.value} run without a bottle")]

    if isinstance(event, StopRequested):
        if state in _WORKING:
            return [Freeze(), RecordDone("stopped", "stopped by /bot-bottle stop"),
                    Comment(_target(run), "Stopped and frozen on request.")]
        return [Ignore(f"nothing to stop: run is {state.value}")]

    if isinstance(event, PrClosed):
        return [Destroy()]

    if isinstance(event, IssueClosed):
        if run.pr_number is None:
            return [Destroy()]
        return [Ignore(f"run has PR #{run.pr_number}; it is destroyed when the PR closes")]

    if isinstance(event, DoneSignal):
        summary = event.summary or "(no summary)"
        body = f"Agent finished with status **{event.status}**:\n\n{summary}"
        record = [RecordDone(event.status, event.summary), Comment(_target(run), body)]
        if state in _WORKING:
            return [Freeze(), *record, *_after_freeze(run)]
        if state is RunState.FROZEN:  # the bottle exited before its done signal was relayed
            return [*record, *_after_freeze(run)]
        return [Ignore(f"done signal for a {state.value} run")]

    if isinstance(event, WatchdogExpired):
        if state in (RunState.STARTING, RunState.RESUMING):
            # the CLI never got the agent going (a hung clone, say): free the slot and say so
            reason = f"the bottle did not start within {int(event.idle_seconds)} s"
            if run.slug:  # a bottle exists: freeze it, so a comment can retry from it
                return [Freeze(), RecordDone("timed_out", reason),
                        Comment(_target(run), f"{reason}; it is frozen. Comment to retry.")]
            return [MarkFailed(reason), Comment(_target(run), f"{reason}; the run failed.")]
        if state is RunState.RUNNING:
            return [Freeze(RunState.TIMED_OUT),
                    Comment(_target(run), f"No progress for {int(event.idle_seconds)} s: "
                            "the bottle was stopped and frozen. Comment to resume it.")]
        return [Ignore(f"watchdog: run is {state.value}")]

    if isinstance(event, BottleExited):
        if state in _WORKING:
            status = f"exited:{event.code}"
            return [Freeze(), RecordDone(status, ""),
                    Comment(_target(run), f"The agent exited (code {event.code}) without "
                            "signalling done; the bottle is frozen. Comment to resume it."),
                    *_after_freeze(run)]
        return [Ignore(f"bottle exit {event.code} after the run left the working states")]

    if isinstance(event, RunnerFailed):
        if state in (RunState.QUEUED, *_WORKING):
            return [MarkFailed(event.reason),
                    Comment(run.issue_number, f"Could not run the agent: {event.reason}")]
        return [Ignore(f"runner failure for a {state.value} run: {event.reason}")]

    raise TypeError(f"unknown event {event!r}")


def __getattr__(name: str):
    # The spec places the `Orchestrator` with `decide`; it lives in `dispatcher` (it needs the
    # executor, which needs this module), so it is offered here lazily.
    if name == "Orchestrator":
        from bot_bottle.orchestrator.dispatcher import Orchestrator
        return Orchestrator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
