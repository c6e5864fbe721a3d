"""THE engine-wide 20 ms media clock.

:class:`TickSchedule` is the arithmetic, with no I/O: deadline ``n`` is ``start + n * period`` on the monotonic
clock, so rounding and wake-up latency never accumulate into drift. When a wake-up comes more than one period
after its deadline (the loop was blocked), the missed ticks are skipped, not replayed in a burst: the schedule
jumps to the latest deadline that has passed and counts the skipped ticks as overruns. A wake-up less than a
period late runs the due tick at once; the next deadline is still on the grid.

:class:`Ticker` is the one asyncio task that sleeps until the next deadline and calls the engine's tick. A wake-up
within the loop clock's resolution (1 ms) before a deadline runs that tick, with ``now`` = the deadline. When
the next tick is already due as one ends, the task still yields to the loop once in between, so sockets are read
however late the ticks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

__all__ = ["CLOCK_RESOLUTION", "PERIOD", "TickSchedule", "Ticker"]

PERIOD = 0.020
#: The coarsest event-loop clock and timer granularity we run on (uvloop: 1 ms); a wake-up this close to a
#: deadline runs its tick instead of sleeping again.
CLOCK_RESOLUTION = 0.001
log = logging.getLogger(__name__)


class TickSchedule:
    """Deadlines ``start + n * period``; :meth:`due` says which tick to run at ``now``."""

    def __init__(self, start: float, period: float = PERIOD) -> None:
        self.start = start
        self.period = period
        self.n = 0  # index of the next tick to run
        self.overruns = 0  # ticks skipped because we were more than a period late
        self.max_lateness = 0.0

    @property
    def next_deadline(self) -> float:
        return self.start + self.n * self.period

    def due(self, now: float) -> int | None:
        """The tick index to run now, or ``None`` if the next deadline has not come yet."""
        deadline = self.next_deadline
        if now < deadline:
            return None
        late = now - deadline
        if late > self.period:
            latest = math.floor((now - self.start) / self.period)
            self.overruns += latest - self.n
            self.n = latest
            late = now - self.next_deadline
        self.max_lateness = max(self.max_lateness, late)
        n = self.n
        self.n += 1
        return n


class Ticker:
    """Runs ``on_tick(now, n)`` on the schedule, in one task, until :meth:`stop`."""

    def __init__(self, on_tick: Callable[[float, int], None], period: float = PERIOD) -> None:
        self.on_tick = on_tick
        self.period = period
        self.schedule: TickSchedule | None = None
        self._task: asyncio.Task[None] | None = None
        self.busy_s = 0.0  # wall time spent inside on_tick, for load figures
        self.busy_cpu_s = 0.0  # CPU time of the loop thread inside on_tick (busy_s minus time we were preempted)
        self.sleeps = 0  # times the task slept: about one per tick

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="media-ticker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def overruns(self) -> int:
        return 0 if self.schedule is None else self.schedule.overruns

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sched = self.schedule = TickSchedule(loop.time(), self.period)
        while True:
            started = loop.time()
            deadline = sched.next_deadline
            if started < deadline - CLOCK_RESOLUTION:
                self.sleeps += 1
                await asyncio.sleep(deadline - started)
                continue
            # Within the clock's resolution of the deadline is on it: uvloop's clock and timers count whole
            # milliseconds, so "not yet" by a float rounding error used to mean sleeping zero ms again and again
            # (~36 wake-ups and ~0.3 ms of CPU per tick) until the millisecond turned.
            now = max(started, deadline)
            n = sched.due(now)
            if n is None:
                continue
            cpu = time.thread_time()
            try:
                self.on_tick(now, n)
            except Exception:  # one bad leg must not stop the clock for every call
                log.exception("media tick %d failed", n)
            self.busy_s += loop.time() - started
            self.busy_cpu_s += time.thread_time() - cpu
            if loop.time() >= sched.next_deadline - CLOCK_RESOLUTION:
                # Late again (a tick longer than a period, or a process the OS starved): let the loop run its
                # I/O callbacks once before the next tick, or no packet would be read until the ticks caught up.
                await asyncio.sleep(0)
