"""Durable delivery of status callbacks: a worker that drains an outbox, per call in order, with retries.

Theory of operation
-------------------
The engine writes each callback into an outbox (a table, written in the same transaction as the call-state change
that caused it), then calls :meth:`Deliverer.wake`. The :class:`Deliverer` asks its :class:`OutboxStore` for the
*heads* that are due: for each call, only the oldest undelivered callback, and only once its next attempt time
has come. So the callbacks of one call leave in order (an event is not sent before the one before it was delivered
or given up), while different calls never wait for each other: each head is sent by its own task, at most
``concurrency`` at once, and a hung callback server holds only the callbacks of the calls that point at it.

Outcome of one attempt (issue 8):

* 2xx (after redirects): delivered.
* 5xx, 429, a timeout or a connection error: tried again after ``RetryPolicy.delay`` (1 s, doubling: 13 tries
  spanning about 68 minutes), then given up.
* any other status, an invalid URL, a body over the limit: given up at once (retrying cannot help).

Every failed attempt is reported to ``on_failure`` (the engine turns it into a Notification), with ``final`` telling
whether it was the last. Because the outbox is durable, a restarted node picks up where the previous process
stopped: at-least-once delivery, in order per call.

Time here is wall-clock epoch seconds (``clock``), since attempt times are stored and outlive the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from callplane.webhooks.fetch import FetchError, WebClient

__all__ = ["Callback", "Deliverer", "MemoryOutbox", "OutboxStore", "RetryPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Callback:
    """One queued status callback. ``attempts`` counts the tries already made."""

    id: int
    call_sid: str
    url: str
    method: str
    params: tuple[tuple[str, str], ...]
    attempts: int = 0
    account_sid: str = ""  # whose callback it is (for the Notification of a failure)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``first`` seconds after the first failure, multiplied by ``factor``, ``tries`` in all."""

    first: float = 1.0
    factor: float = 2.0
    tries: int = 13

    def delay(self, attempts_made: int) -> float | None:
        """Seconds until the next try after ``attempts_made`` failed tries, or None to give up."""
        if attempts_made >= self.tries:
            return None
        return self.first * self.factor ** (attempts_made - 1)

    def span(self) -> float:
        """Seconds from the first try to the last one."""
        return sum(self.first * self.factor**i for i in range(self.tries - 1))


class OutboxStore(Protocol):
    """Where callbacks wait. The store module implements it on the database; :class:`MemoryOutbox` in memory."""

    async def due(self, now: float, limit: int, exclude: frozenset[str]) -> list[Callback]:
        """At most ``limit`` heads (one per call, calls in ``exclude`` skipped) whose next attempt is due."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest head becomes due (None: the outbox is empty)."""
        ...

    async def delivered(self, item: Callback) -> None: ...

    async def retry(self, item: Callback, next_at: float, error: str) -> None: ...

    async def give_up(self, item: Callback, error: str) -> None: ...


FailureHandler = Callable[[Callback, FetchError, bool], Awaitable[None]]


class Deliverer:
    """The delivery worker: run :meth:`run` as a task; :meth:`wake` after writing to the outbox."""

    def __init__(
        self,
        store: OutboxStore,
        client: WebClient,
        *,
        clock: Callable[[], float],
        policy: RetryPolicy | None = None,
        on_failure: FailureHandler | None = None,
        concurrency: int = 64,
        poll: float = 5.0,
        batch_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.on_failure = on_failure
        self.concurrency = concurrency
        self.poll = poll
        self.batch_interval = batch_interval
        self._next_retry: float | None = None
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[None]] = {}
        self.delivered = 0
        self.failed_attempts = 0

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    async def run(self) -> None:
        """Deliver until cancelled. A store error is logged and retried after ``poll`` seconds.

        The store is read when woken (new rows, a finished delivery), when a retry falls due, and every ``poll``
        seconds (rows written by an earlier run); reads are at least ``batch_interval`` apart, so a busy node reads
        once per batch of events, not once per event.
        """
        loop = asyncio.get_running_loop()
        last_read = -1e9
        try:
            while True:
                pause = last_read + self.batch_interval - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                self._wake.clear()
                last_read = loop.time()
                try:
                    free = self.concurrency - len(self._busy)
                    if free > 0:
                        now = self.clock()
                        for item in await self.store.due(now, free, frozenset(self._busy)):
                            self._busy[item.call_sid] = asyncio.create_task(self._deliver(item))
                except Exception:
                    log.exception("webhook outbox: reading the store failed; trying again in %.0f s", self.poll)
                timeout = self.poll
                if self._next_retry is not None:
                    timeout = min(timeout, max(0.0, self._next_retry - self.clock()))
                    if timeout <= 0:
                        self._next_retry = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(timeout, 0.001)):
                        await self._wake.wait()
        finally:
            for task in list(self._busy.values()):
                task.cancel()
            if self._busy:
                await asyncio.gather(*self._busy.values(), return_exceptions=True)
            self._busy.clear()

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is in flight and nothing is due (tests and graceful shutdown). True when drained."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if not self._busy:
                        nxt = await self.store.next_due()
                        if nxt is None:
                            return True
                    await asyncio.sleep(0.02)
        except TimeoutError:
            return False

    async def _deliver(self, item: Callback) -> None:
        try:
            try:
                await self.client.request(item.url, item.method, item.params)
            except FetchError as e:
                await self._failed(item, e)
            else:
                await self.store.delivered(item)
                self.delivered += 1
        except Exception:
            # A store failure: the row stays due, so it is tried again on a later pass.
            log.exception("webhook outbox: recording the outcome of callback %s failed", item.id)
        finally:
            self._busy.pop(item.call_sid, None)
            self._wake.set()

    async def _failed(self, item: Callback, error: FetchError) -> None:
        self.failed_attempts += 1
        attempts = item.attempts + 1
        delay = self.policy.delay(attempts) if error.retryable else None
        text = str(error)
        if delay is None:
            log.warning("status callback %s for %s given up after %d tries: %s", item.id, item.call_sid, attempts, text)
            await self.store.give_up(item, text)
        else:
            log.info(
                "status callback %s for %s failed (try %d), again in %g s: %s",
                item.id,
                item.call_sid,
                attempts,
                delay,
                text,
            )
            next_at = self.clock() + delay
            await self.store.retry(item, next_at, text)
            self._next_retry = next_at if self._next_retry is None else min(self._next_retry, next_at)
        if self.on_failure is not None:
            try:
                await self.on_failure(item, error, delay is None)
            except Exception:
                log.exception("webhook outbox: the failure handler raised")


@dataclass(slots=True)
class _Row:
    item: Callback
    next_at: float
    done: bool = False


class MemoryOutbox:
    """An :class:`OutboxStore` in memory (tests, and a node without a database). Not durable."""

    def __init__(self) -> None:
        self._rows: list[_Row] = []
        self._next_id = 1
        self.given_up: list[tuple[Callback, str]] = []

    def add(self, call_sid: str, url: str, method: str, params: tuple[tuple[str, str], ...], now: float) -> Callback:
        item = Callback(self._next_id, call_sid, url, method, params)
        self._next_id += 1
        self._rows.append(_Row(item, now))
        return item

    def _heads(self) -> dict[str, _Row]:
        heads: dict[str, _Row] = {}
        for row in self._rows:
            if not row.done and row.item.call_sid not in heads:
                heads[row.item.call_sid] = row
        return heads

    async def due(self, now: float, limit: int, exclude: frozenset[str]) -> list[Callback]:
        heads = [r for sid, r in self._heads().items() if sid not in exclude and r.next_at <= now]
        heads.sort(key=lambda r: (r.next_at, r.item.id))
        return [r.item for r in heads[:limit]]

    async def next_due(self) -> float | None:
        heads = self._heads()
        return min((r.next_at for r in heads.values()), default=None)

    def _row(self, item: Callback) -> _Row:
        return next(r for r in self._rows if r.item.id == item.id)

    async def delivered(self, item: Callback) -> None:
        self._row(item).done = True

    async def retry(self, item: Callback, next_at: float, error: str) -> None:
        row = self._row(item)
        row.item = Callback(item.id, item.call_sid, item.url, item.method, item.params, item.attempts + 1)
        row.next_at = next_at

    async def give_up(self, item: Callback, error: str) -> None:
        self._row(item).done = True
        self.given_up.append((item, error))
