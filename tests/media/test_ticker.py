from __future__ import annotations

import asyncio

import pytest
import uvloop

from callplane.media.ticker import Ticker, TickSchedule


def test_deadlines_are_on_the_grid() -> None:
    s = TickSchedule(100.0)
    assert s.due(99.999) is None
    assert s.due(100.0) == 0
    assert s.next_deadline == pytest.approx(100.02)
    assert s.due(100.025) == 1  # 5 ms late: run it, the grid does not move
    assert s.next_deadline == pytest.approx(100.04)
    assert s.due(100.039) is None
    assert s.overruns == 0


def test_no_drift_over_many_ticks() -> None:
    s = TickSchedule(0.0)
    now = 0.0
    for expect in range(50_000):
        now = s.next_deadline + 0.0007  # every wake-up 0.7 ms late
        assert s.due(now) == expect
    assert s.next_deadline == pytest.approx(50_000 * 0.02)
    assert s.overruns == 0


def test_more_than_a_period_behind_skips_ahead_without_burst() -> None:
    s = TickSchedule(0.0)
    assert s.due(0.0) == 0
    # The loop was blocked: we wake at 0.105 (deadline 1 was 0.02). Ticks 1..4 are skipped, tick 5 runs.
    assert s.due(0.105) == 5
    assert s.overruns == 4
    assert s.due(0.106) is None  # no burst: the next tick waits for its own deadline
    assert s.due(0.12) == 6


def test_exactly_one_period_late_is_not_an_overrun() -> None:
    s = TickSchedule(0.0)
    s.due(0.0)
    assert s.due(0.04) == 1  # 20 ms late
    assert s.due(0.04) == 2  # its own deadline has come
    assert s.overruns == 0


async def test_ticker_calls_back_with_consecutive_ticks() -> None:
    seen: list[int] = []
    skipped: list[int] = []
    done = asyncio.Event()

    def on_tick(now: float, n: int) -> None:
        seen.append(n)
        if len(seen) == 5:
            skipped.append(t.overruns)
            done.set()

    t = Ticker(on_tick)
    t.start()
    await asyncio.wait_for(done.wait(), 5)
    await t.stop()
    assert seen[0] == 0
    assert seen[4] == 4 + skipped[0]  # every tick index is either run once or counted as skipped


def test_ticker_sleeps_about_once_per_tick_under_uvloop() -> None:
    # uvloop's clock counts whole milliseconds: a deadline a float rounding error ahead of "now" must not turn
    # into a busy loop of zero-millisecond sleeps until the millisecond turns.
    ran: list[float] = []

    async def main() -> Ticker:
        done = asyncio.Event()

        def on_tick(now: float, n: int) -> None:
            ran.append(now)
            if len(ran) == 20:
                done.set()

        t = Ticker(on_tick)
        t.start()
        await asyncio.wait_for(done.wait(), 10)
        await t.stop()
        return t

    t = uvloop.run(main())
    assert t.sleeps <= 2 * 20
    sched = t.schedule
    assert sched is not None
    assert all(now >= sched.start + k * sched.period for k, now in enumerate(ran) if k >= t.overruns)


async def test_late_ticks_still_let_the_loop_read_between_them() -> None:
    """Ticks longer than a period (or a starved process) make every next tick due at once: the loop's other
    callbacks (socket readers) must still run between two ticks, not only once the ticks are on time again."""
    import time

    loop = asyncio.get_running_loop()
    order: list[str] = []
    done = asyncio.Event()

    def reader() -> None:
        order.append("r")
        if not done.is_set():
            loop.call_soon(reader)  # a socket that always has a datagram waiting

    def on_tick(now: float, n: int) -> None:
        order.append("t")
        if order.count("t") <= 6:
            time.sleep(0.025)  # longer than a period: the next tick is due as this one ends
        else:
            done.set()

    t = Ticker(on_tick)
    t.start()
    loop.call_soon(reader)
    await asyncio.wait_for(done.wait(), 5)
    await t.stop()
    assert "t,t" not in ",".join(order)  # never two ticks without a read between them
