"""Time sources. Sans-IO code takes ``now`` as an argument; adapters read it from a :class:`Clock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds for timers and wall-clock UTC for records."""

    def monotonic(self) -> float: ...

    def wall(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = 0.0, wall: datetime | None = None) -> None:
        self._now = start
        self._wall0 = wall or datetime(2026, 1, 1, tzinfo=UTC)
        self._start = start

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> datetime:
        from datetime import timedelta

        return self._wall0 + timedelta(seconds=self._now - self._start)

    def advance(self, seconds: float) -> None:
        self._now += seconds
