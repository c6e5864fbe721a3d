"""The engine's record writer against the real store: one bad write costs only itself."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from callplane.engine.writer import Callback, RecordWriter, Write
from callplane.store import calls as store_calls
from callplane.store.calls import CallRecord
from callplane.store.db import Database, to_us
from callplane.store.outbox import TableOutbox
from tests.api.conftest import ADMIN_SID, T0, Api

NODE = "ID" + "4" * 32


def record(n: int) -> CallRecord:
    return CallRecord(
        sid=f"{NODE}-CA{n:032x}",
        instance_id=NODE,
        account_sid=ADMIN_SID,
        date_created=T0,
        date_updated=T0,
        to="bob",
        from_="alice",
        status="queued",
        direction="outbound-api",
    )


async def test_a_duplicate_insert_does_not_take_the_batch_down(api: Api) -> None:
    db: Database = api.db
    writer = RecordWriter(db, NODE)
    writer.start()
    try:
        await writer.apply(Write(record(1).sid, ADMIN_SID, inserts=[record(1)]))
        later = T0 + timedelta(seconds=3)
        writer.submit(Write(record(1).sid, ADMIN_SID, inserts=[record(1)]))  # the same sid again: refused
        cb = Callback("http://app/status", "POST", (("CallStatus", "ringing"),))
        ok = await writer.apply(
            Write(
                record(1).sid,
                ADMIN_SID,
                expect=("queued",),
                values={"status": "ringing", "date_updated": to_us(later)},
                callbacks=[cb],
                now=later.timestamp(),
            )
        )
    finally:
        await writer.close()
    assert ok
    stored = await store_calls.get(db, record(1).sid)
    assert stored is not None and stored.status == "ringing"
    assert writer.dropped == 1
    assert await TableOutbox(db, NODE).pending(record(1).sid) == 1


async def test_a_transition_that_finds_the_call_moved_on_is_not_applied(api: Api) -> None:
    db: Database = api.db
    writer = RecordWriter(db, NODE)
    writer.start()
    try:
        await writer.apply(Write(record(2).sid, ADMIN_SID, inserts=[record(2)]))
        first = Write(record(2).sid, ADMIN_SID, expect=("queued",), values={"status": "canceled"})
        second = Write(
            record(2).sid,
            ADMIN_SID,
            expect=("queued",),
            values={"status": "ringing"},
            callbacks=[Callback("http://app/s", "POST", ())],
        )
        writer.submit(first)
        applied = await writer.apply(second)
    finally:
        await writer.close()
    assert not applied and writer.conflicts == 1
    stored = await store_calls.get(db, record(2).sid)
    assert stored is not None and stored.status == "canceled"
    assert await TableOutbox(db, NODE).pending(record(2).sid) == 0  # no callback for a transition that lost


async def test_an_idle_writer_commits_at_once_and_a_busy_one_gathers_writes_into_one_transaction(api: Api) -> None:
    db: Database = api.db
    writer = RecordWriter(db, NODE, batch_interval=30.0)
    writer.start()
    try:
        # Idle: committed at once (waiting out the interval would take 30 s).
        await asyncio.wait_for(writer.apply(Write(record(10).sid, ADMIN_SID, inserts=[record(10)])), 10)
        assert writer.transactions == 1
        writer.batch_interval = 1.0
        # Busy: writes that arrive one at a time within the interval share the next transaction.
        pending = []
        for n in range(11, 16):
            pending.append(asyncio.ensure_future(writer.apply(Write(record(n).sid, ADMIN_SID, inserts=[record(n)]))))
            await asyncio.sleep(0.02)
        assert await asyncio.gather(*pending) == [True] * 5
    finally:
        await writer.close()
    assert writer.transactions == 2
    for n in range(10, 16):
        assert await store_calls.get(db, record(n).sid) is not None
