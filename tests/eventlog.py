"""What a test-side node or UA reported, in order, with awaitable look-ups (shared by UaDriver and MediaNode)."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

E = TypeVar("E")


class EventLog:
    """``record(event)`` from a callback; tests ``await expect(Kind)``, ``await wait_for(Kind)`` or read ``events``."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def record(self, event: Any) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    async def expect(self, kind: type[E], timeout: float = 10.0) -> E:
        """The next event, which must be of ``kind`` (other kinds fail the test with what was seen)."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {kind.__name__} within {timeout} s; events so far: {self.events}") from None
        if not isinstance(event, kind):
            raise AssertionError(f"expected {kind.__name__}, got {event!r}; events so far: {self.events}")
        return event

    async def wait_for(self, kind: type[E], timeout: float = 10.0) -> E:
        """Skip events until one of ``kind`` arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                event = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(f"no {kind.__name__} within {timeout} s; events: {self.events}") from None
            if isinstance(event, kind):
                return event

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]
