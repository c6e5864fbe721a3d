"""The engine's one writer: call-record transitions, their status callbacks and Notifications, batched in order.

Every change the engine makes to the store goes through :class:`RecordWriter`. Writes are applied in submission
order (so a call's ``ringing`` never lands after its ``completed``), several per transaction when they queue up
(SQLite has one writer; batching keeps a hundred calls a second cheap), and each transition is *conditional*: it
names the statuses it expects (``store.call_updates.transition``), and the status callbacks it fires are queued in
the outbox in the same transaction, so a crash loses neither without the other. After each commit the delivery
worker is woken.

Group commit: a writer that has been idle for ``batch_interval`` commits a new write at once; a busy one starts a
transaction at most every ``batch_interval`` seconds, with everything that queued meanwhile. Each transaction costs
a fixed price (the connection, BEGIN and COMMIT, one round trip per statement shape), so under load the batches
grow and the price per call falls, while an idle node answers as fast as before. The wait adds at most
``batch_interval`` to a write's latency (POST Calls waits for its record).

A failed transaction is retried (the database may be restarting); the writer never raises into the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from callplane.core.errors import Conflict, StoreError
from callplane.store import calls as store_calls
from callplane.store import notifications as store_notifications
from callplane.store.calls import CallRecord
from callplane.store.db import Database
from callplane.store.notifications import NotificationRecord
from callplane.store.outbox import (
    CallbackTarget,
    NewCallback,
    enqueue_many,
    forget_targets,
    remove_many,
    reschedule_many,
    save_targets,
    update_target,
)

__all__ = ["Callback", "RecordWriter", "Write"]

log = logging.getLogger(__name__)

MAX_BATCH = 200
BATCH_INTERVAL = 0.02
RETRY_DELAY = 0.5
MAX_TRIES = 20


@dataclass(frozen=True, slots=True)
class Callback:
    url: str
    method: str
    params: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Write:
    """One unit: new records, an optional conditional record update, the callbacks it fires, bookkeeping."""

    call_sid: str
    account_sid: str
    expect: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    callbacks: Sequence[Callback] = ()
    notification: NotificationRecord | None = None
    final: bool = False  # the call's last write: its callback target is no longer needed
    retarget: tuple[str, str] | None = None  # live call modification's new (StatusCallback, method)
    inserts: Sequence[CallRecord] = ()  # new call records (POST Calls), with their callback targets
    targets: Sequence[CallbackTarget] = ()
    outbox_done: Sequence[int] = ()  # delivered or abandoned outbox rows
    outbox_retry: Sequence[tuple[int, int, float]] = ()  # (row id, attempts, next attempt)
    now: float = 0.0  # wall-clock epoch seconds (outbox due time)
    done: asyncio.Future[bool] | None = None


class RecordWriter:
    def __init__(
        self,
        db: Database,
        instance_id: str,
        *,
        on_commit: Callable[[], None] | None = None,
        batch_interval: float = BATCH_INTERVAL,
    ) -> None:
        self.db = db
        self.instance_id = instance_id
        self.on_commit = on_commit
        self.batch_interval = batch_interval
        self._queue: asyncio.Queue[Write] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.conflicts = 0
        self.written = 0
        self.dropped = 0
        self.transactions = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="record-writer")

    async def close(self) -> None:
        """Write what is queued, then stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def submit(self, write: Write) -> None:
        self._queue.put_nowait(write)

    async def apply(self, write: Write) -> bool:
        """Submit and wait until committed; True when the conditional update applied (or there was none)."""
        write.done = asyncio.get_running_loop().create_future()
        self.submit(write)
        return await write.done

    async def flush(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = -1e9
        while True:
            batch = [await self._queue.get()]
            pause = last + self.batch_interval - loop.time()
            if pause > 0:  # busy: let the batch grow until the interval since the last transaction is over
                await asyncio.sleep(pause)
            last = loop.time()
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            results = await self._commit(batch)
            for w, ok in zip(batch, results, strict=True):
                if w.done is not None and not w.done.done():
                    w.done.set_result(ok)
                self._queue.task_done()
            if self.on_commit is not None:
                self.on_commit()

    async def _commit(self, batch: list[Write]) -> list[bool]:
        """The batch in one transaction; if that fails twice, each write alone, so one bad write (a duplicate sid, a
        value the database refuses) costs only itself. A database that is down is waited for."""
        for attempt in range(1, 3):
            try:
                return await self._transaction(batch)
            except Exception as e:
                log.warning("record writer: a batch of %d failed (%s), try %d", len(batch), e, attempt)
        results: list[bool] = []
        for w in batch:
            results.append(await self._alone(w))
        return results

    async def _alone(self, w: Write) -> bool:
        for attempt in range(1, MAX_TRIES + 1):
            try:
                return (await self._transaction([w]))[0]
            except StoreError as e:
                if isinstance(e, Conflict) or attempt == MAX_TRIES:
                    log.error("record writer: dropped a write for %s: %s", w.call_sid, e)
                    self.dropped += 1
                    return False
                await asyncio.sleep(RETRY_DELAY)  # the database may be restarting
            except Exception:
                log.exception("record writer: dropped a write for %s", w.call_sid)
                self.dropped += 1
                return False
        return False

    async def _transaction(self, batch: list[Write]) -> list[bool]:
        """The whole batch in one transaction and few statements (executemany per shape)."""
        results = await self.db.run(lambda conn: self._apply(conn, batch))
        for w, ok in zip(batch, results, strict=True):
            if w.values and not ok:
                self.conflicts += 1
                log.info("[%s] record already moved on; %s not applied", w.call_sid, w.values.get("status"))
        self.written += len(batch)
        self.transactions += 1
        return results

    def _apply(self, conn: Connection, batch: list[Write]) -> list[bool]:
        """The batch's statements (a unit of ``Database.run``: on SQLite it runs in the store's thread)."""
        results = [True] * len(batch)
        inserts = [r for w in batch for r in w.inserts]
        if inserts:
            store_calls.insert_many_with(conn, inserts)
            save_targets(conn, self.instance_id, [t for w in batch for t in w.targets])
        updating = [i for i, w in enumerate(batch) if w.values]
        applied = store_calls.update_calls_with(
            conn, [(batch[i].call_sid, batch[i].values, batch[i].expect[0]) for i in updating]
        )
        for i, ok in zip(updating, applied, strict=True):
            results[i] = ok
        callbacks: list[NewCallback] = []
        finished: list[str] = []
        for w, ok in zip(batch, results, strict=True):
            if ok:
                callbacks.extend(NewCallback(w.call_sid, w.account_sid, c.url, c.method, c.params) for c in w.callbacks)
                if w.final:
                    finished.append(w.call_sid)
            if w.retarget is not None:
                update_target(conn, w.call_sid, *w.retarget)
        now = max((w.now for w in batch), default=0.0)
        enqueue_many(conn, self.instance_id, callbacks, now)
        forget_targets(conn, finished)
        notes = [w.notification for w in batch if w.notification is not None]
        if notes:
            store_notifications.insert_many_with(conn, notes)
        remove_many(conn, [i for w in batch for i in w.outbox_done])
        reschedule_many(conn, [r for w in batch for r in w.outbox_retry])
        return results
