"""The lifecycle's vocabulary: the events `lifecycle.decide` takes (already classified by
targeting, or raised by the executor's workers and start-up), what the executor has under way
for a run (`InFlight`), and the actions `decide` returns, all frozen values. `lifecycle`
re-exports every name, so callers write `L.BottleExited`, `L.Freeze`; what each action does to
the store and the runner is the executor's business. The bottle operations (`BOTTLE_OPS`) run
on the bounded worker pool (`bottle_ops`) and come back as `OpSucceeded` or `OpFailed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot_bottle.orchestrator.model import RunState

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
    """The issue was closed by `closer` (the delivery's sender); `by_writer` when the closer
    has write access on the repository (the collaborator permission comment trust uses).
    Only a writer's close destroys the run: whoever opened an issue may close it."""
    by_writer: bool = False  # unknown access is no access
    closer: str = ""


@dataclass(frozen=True)
class DoneSignal:
    status: str  # done | blocked | failed
    summary: str


@dataclass(frozen=True)
class WatchdogExpired:
    idle_seconds: float


@dataclass(frozen=True)
class BottleExited:
    """The agent's process ended. `log_tail` is the bottle log's end, already cleaned
    (`log_tail.clean`); `timed_out` when the core stopped it at its wall-time `limit` (s).
    `process`: which of the run's agent processes in this service it was (`InFlight.process`)."""
    code: int
    log_tail: str = ""
    timed_out: bool = False
    limit: int | None = None
    process: int | None = None


@dataclass(frozen=True)
class RunnerFailed:
    reason: str
    log_tail: str = ""
    process: int | None = None  # as for `BottleExited`
    # a start whose CLI removed the bottle it had made: the prompt to launch it from again
    launch_prompt: str | None = None


@dataclass(frozen=True)
class BottleCreated:
    """The CLI of a start in flight printed its bottle's slug."""
    slug: str


@dataclass(frozen=True)
class Restarted:
    """Start-up found the run working: its waiter died with the previous process. `slug` is
    its bottle when the runner lists one (None: no bottle exists)."""
    slug: str | None


@dataclass(frozen=True)
class AgentResumed:
    """A resume's worker is about to run the CLI: the run is working again."""


@dataclass(frozen=True)
class OpSucceeded:
    """A bottle operation (`action`, one of `BOTTLE_OPS`) ended well on a worker."""
    action: "Action"


@dataclass(frozen=True)
class OpFailed:
    """A bottle operation failed `attempts` times (the last `reason` already redacted of the
    run token and the service's secrets); it is not tried again."""
    action: "Action"
    reason: str
    attempts: int = 1


Event = (LaunchRequested | SlotAvailable | TrustedComment | StopRequested | PrClosed
         | IssueClosed | DoneSignal | WatchdogExpired | BottleExited | RunnerFailed
         | BottleCreated | Restarted | AgentResumed | OpSucceeded | OpFailed)


@dataclass(frozen=True)
class InFlight:
    """What the executor has under way for a run, which the store does not record: a start of
    its bottle (clone, then the CLI) and a freeze of it queued or running on a worker, and
    `process`: the number of the run's latest agent process (start or resume) in this service,
    so the late end of an earlier one (a start whose CLI returns after its bottle was frozen
    and resumed) is told from the end of the one running now."""
    starting: bool = False
    freezing: bool = False
    process: int | None = None


IDLE = InFlight()

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
    """Freeze the run's bottle on a worker (`commit <slug>`); `OpSucceeded` then moves the run
    to `state` (`frozen` or `timed_out`)."""
    state: RunState = RunState.FROZEN


@dataclass(frozen=True)
class MarkFrozen:
    """State `frozen` (or `timed_out`) now: the bottle is frozen, or there is none."""
    state: RunState = RunState.FROZEN


@dataclass(frozen=True)
class RecordDone:
    status: str
    summary: str


@dataclass(frozen=True)
class Destroy:
    """State `destroyed` (its bottle goes with a `DestroyBottle`)."""


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


@dataclass(frozen=True)
class Started:
    """The bottle exists: record its slug, state `running` (the launch prompt is spent)."""
    slug: str


@dataclass(frozen=True)
class ForgetBottle:
    """The bottle the start made is gone again: the run has none, and keeps the prompt to
    launch it from (so a comment relaunches it)."""
    launch_prompt: str


@dataclass(frozen=True)
class RecordSlug:
    """Record the run's bottle without a state change."""
    slug: str


@dataclass(frozen=True)
class DestroyBottle:
    """Destroy the bottle (and the git gate's repository) of a run that is destroyed, on a
    worker (state unchanged): the run's own, or one its start made after the close."""
    slug: str


@dataclass(frozen=True)
class FreezeBottle:
    """Record the bottle a start made for a run already stopped or failed, and freeze it
    (state unchanged), so its agent does not work on unnoticed."""
    slug: str


@dataclass(frozen=True)
class OpenPr:
    """The agent is done and has no PR: open one from its branch on Gitea when that branch has
    commits the default branch lacks (the git gate delivered them), recorded as the run's PR."""


@dataclass(frozen=True)
class Requeue:
    """Back to `queued`, keeping the launch prompt: the launch is made again."""


@dataclass(frozen=True)
class Relaunch:
    """A failed run that never had a bottle goes back to `queued` with `prompt` as its new
    launch prompt (`decide` refuses while the failed start is still in flight)."""
    prompt: str


Action = (Launch | Queue | StartQueued | Resume | RememberPrompt | Freeze | RecordDone
          | Destroy | MarkFailed | Comment | Ignore | Started | RecordSlug | ForgetBottle
          | DestroyBottle | FreezeBottle | Requeue | Relaunch | OpenPr | MarkFrozen)

# actions carried out on the bounded worker pool, one at a time per run, retried with back-off
BOTTLE_OPS = (Freeze, FreezeBottle, DestroyBottle, OpenPr)
