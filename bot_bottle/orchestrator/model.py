"""The orchestrator's domain values: run states and their allowed transitions, `RunRecord`,
and the orchestrator layer's error root.

The transition table is the one place that says which state may follow which; every store
write of a state goes through `check_transition`.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field, replace

from bot_bottle.errors import BotBottleError
from bot_bottle.state import slugify


class OrchestratorError(BotBottleError):
    """Root of the orchestrator layer."""


class IllegalTransition(OrchestratorError):
    """A state change the transition table does not allow."""


# owner and repo names whose label needs no hash: slugify keeps them as they are
_PLAIN = re.compile(r"[a-z0-9]+")


class RunState(enum.Enum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    FROZEN = "frozen"
    RESUMING = "resuming"
    DESTROYED = "destroyed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"

    @property
    def is_live(self) -> bool:
        return self is not RunState.DESTROYED

    @property
    def has_process(self) -> bool:
        """States in which a bottle process may be running."""
        return self in WORKING_STATES


S = RunState
# the states in which a bottle process may run: watched by the watchdog, reconciled at start
WORKING_STATES = (S.STARTING, S.RUNNING, S.RESUMING)
ALLOWED_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    S.QUEUED: frozenset({S.STARTING, S.FAILED, S.DESTROYED}),
    # back to `queued`: the process that was starting it died before the bottle existed
    S.STARTING: frozenset({S.QUEUED, S.RUNNING, S.FROZEN, S.FAILED, S.DESTROYED}),
    S.RUNNING: frozenset({S.FROZEN, S.TIMED_OUT, S.FAILED, S.DESTROYED}),
    # back to `queued` (also from `failed`): a run that never had a bottle (stopped while
    # starting, or its clone or start failed) is launched again by a trusted comment
    S.FROZEN: frozenset({S.RESUMING, S.QUEUED, S.DESTROYED}),
    S.RESUMING: frozenset({S.RUNNING, S.FROZEN, S.FAILED, S.DESTROYED}),
    S.TIMED_OUT: frozenset({S.RESUMING, S.DESTROYED}),
    # a failed run may still own a frozen bottle: a trusted comment retries it, a close cleans up
    S.FAILED: frozenset({S.RESUMING, S.QUEUED, S.DESTROYED}),
    S.DESTROYED: frozenset(),
}
del S


def check_transition(current: RunState, new: RunState) -> None:
    if new not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(f"run cannot go from {current.value} to {new.value}")


@dataclass(frozen=True)
class RunRecord:
    """One run: an issue worked on by one agent in one bottle, from launch to destroy."""

    id: int
    owner: str
    repo: str
    issue_number: int
    agent: str
    bottles: tuple[str, ...]
    state: RunState
    created_at: float
    updated_at: float
    run_token: str = field(repr=False, default="")
    slug: str | None = None
    pr_number: int | None = None
    last_progress_at: float | None = None
    last_done_status: str | None = None
    last_done_summary: str | None = None
    pending_prompt: str | None = None
    error: str | None = None
    # the prompt a queued or starting run is launched with, kept until its bottle exists so
    # a launch cut short (a crash) can be made again; `pending_prompt` is a comment's prompt
    launch_prompt: str | None = field(repr=False, default=None)

    @property
    def label(self) -> str:
        """The bottle label the runner passes to `start --label` (slugified by the core), one
        per issue: `acme-widgets-42` for plain lowercase names; where slugify could make two
        repositories meet (`a-b/c` and `a/b-c`, dots, capitals) or cut a long name, a
        shortened readable part and `h` + a hash of the full name."""
        plain = f"{self.owner}-{self.repo}-{self.issue_number}"
        if _PLAIN.fullmatch(self.owner) and _PLAIN.fullmatch(self.repo) and len(plain) <= 48:
            return plain
        full = f"{self.owner}/{self.repo}#{self.issue_number}".encode()
        return f"{plain[:40]}-h{hashlib.sha256(full).hexdigest()[:10]}"

    @property
    def expected_slug(self) -> str:
        """The run's bottle slug: the recorded one, else the one the core gives a bottle
        started with `label` (found after a crash before the slug line was read)."""
        return self.slug or slugify(self.label)

    @property
    def repo_full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def with_changes(self, **changes) -> "RunRecord":
        return replace(self, **changes)
