"""The delivery worker: per-call order, retries with backoff, give-up rules, isolation of a hung server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callplane.webhooks.fetch import FetchError, Limits, WebClient
from callplane.webhooks.outbox import Callback, Deliverer, MemoryOutbox, RetryPolicy
from tests.webapp import Answer, WebApp


def test_policy_spans_more_than_an_hour_with_at_least_eight_tries() -> None:
    policy = RetryPolicy()
    assert policy.tries >= 8
    assert policy.delay(1) == 1.0
    assert [policy.delay(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.delay(policy.tries) is None
    assert policy.span() >= 3600


class Clock:
    """Wall time that the test can push forward (the deliverer stores absolute attempt times)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.loop = asyncio.get_running_loop()

    def __call__(self) -> float:
        return 1_000_000.0 + self.loop.time() + self.offset


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        yield a


async def run_deliverer(
    store: MemoryOutbox, policy: RetryPolicy, failures: list[tuple[int, int, bool]], clock: Clock
) -> tuple[Deliverer, asyncio.Task[None], WebClient]:
    client = WebClient(Limits(connect_timeout=0.5, total_timeout=0.5))

    async def on_failure(item: Callback, error: FetchError, final: bool) -> None:
        failures.append((item.id, error.code, final))

    d = Deliverer(store, client, clock=clock, policy=policy, on_failure=on_failure, poll=0.05)
    return d, asyncio.create_task(d.run()), client


async def stop(task: asyncio.Task[None], client: WebClient) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.close()


async def test_events_of_one_call_arrive_in_order_even_across_retries(app: WebApp) -> None:
    app.route("/status", [Answer(503), Answer(200)])
    clock = Clock()
    store = MemoryOutbox()
    for event in ("initiated", "ringing", "answered", "completed"):
        store.add("CA1", app.url("/status"), "POST", (("CallStatus", event),), clock())
    failures: list[tuple[int, int, bool]] = []
    d, task, client = await run_deliverer(store, RetryPolicy(first=0.05), failures, clock)
    try:
        assert await d.drain(5.0)
    finally:
        await stop(task, client)
    sent = [s.param("CallStatus") for s in app.requests("/status")]
    assert sent == ["initiated", "initiated", "ringing", "answered", "completed"]
    assert failures == [(1, 11200, False)]
    assert d.delivered == 4


async def test_client_errors_are_not_retried_and_the_next_event_proceeds(app: WebApp) -> None:
    app.route("/bad", Answer(400))
    app.route("/ok", Answer(204))
    clock = Clock()
    store = MemoryOutbox()
    store.add("CA1", app.url("/bad"), "POST", (("n", "1"),), clock())
    store.add("CA1", app.url("/ok"), "GET", (("n", "2"),), clock())
    failures: list[tuple[int, int, bool]] = []
    d, task, client = await run_deliverer(store, RetryPolicy(first=0.05), failures, clock)
    try:
        assert await d.drain(5.0)
    finally:
        await stop(task, client)
    assert len(app.requests("/bad")) == 1
    assert [s.query for s in app.requests("/ok")] == [[("n", "2")]]
    assert failures == [(1, 11200, True)]
    assert [(c.id, e) for c, e in store.given_up] == [(1, f"POST {app.url('/bad')}: HTTP 400")]


async def test_retries_stop_after_the_last_try(app: WebApp) -> None:
    app.route("/down", Answer(500))
    clock = Clock()
    store = MemoryOutbox()
    store.add("CA1", app.url("/down"), "POST", (), clock())
    failures: list[tuple[int, int, bool]] = []
    d, task, client = await run_deliverer(store, RetryPolicy(first=0.01, factor=1.0, tries=4), failures, clock)
    try:
        assert await d.drain(5.0)
    finally:
        await stop(task, client)
    assert len(app.requests("/down")) == 4
    assert [f[2] for f in failures] == [False, False, False, True]


async def test_a_hung_callback_server_does_not_delay_other_calls(app: WebApp) -> None:
    app.route("/hung", Answer(200, delay=3.0))
    app.route("/fast", Answer(200))
    clock = Clock()
    store = MemoryOutbox()
    store.add("CA-slow", app.url("/hung"), "POST", (), clock())
    for i in range(5):
        store.add(f"CA{i}", app.url("/fast"), "POST", (("i", str(i)),), clock())
    failures: list[tuple[int, int, bool]] = []
    d, task, client = await run_deliverer(store, RetryPolicy(first=10.0), failures, clock)
    try:
        await app.wait_for("/fast", count=5, timeout=2.0)
    finally:
        await stop(task, client)
    assert sorted(s.param("i") or "" for s in app.requests("/fast")) == ["0", "1", "2", "3", "4"]


async def test_a_store_failure_does_not_stop_the_worker(app: WebApp) -> None:
    app.route("/ok", Answer(200))

    class Flaky(MemoryOutbox):
        calls = 0

        async def due(self, now: float, limit: int, exclude: frozenset[str]) -> list[Callback]:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("database went away")
            return await super().due(now, limit, exclude)

    clock = Clock()
    store = Flaky()
    store.add("CA1", app.url("/ok"), "POST", (), clock())
    d, task, client = await run_deliverer(store, RetryPolicy(), [], clock)
    try:
        await app.wait_for("/ok", timeout=3.0)
    finally:
        await stop(task, client)
