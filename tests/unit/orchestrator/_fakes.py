"""Shared test doubles for the orchestrator tests: fakes with state, never mocks."""

from __future__ import annotations


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


try:  # the forge layer's fake, once it exists
    from bot_bottle.testing.fake_forge import FakeForge  # noqa: F401
except ImportError:  # pragma: no cover
    FakeForge = None
