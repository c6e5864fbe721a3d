"""Two nodes on one database: conditional call updates, migrations under a lock, upserted settings and bindings.

Each "node" is its own :class:`Database` (its own pool of connections) on the same database.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from callplane.store import calls, node_settings
from callplane.store import registrations as regs
from callplane.store.calls import CallRecord
from callplane.store.db import MIGRATION_LOCK, Database
from callplane.store.registrations import BindingRow
from tests.api.conftest import ADMIN_SID, Api
from tests.store.records import INSTANCE, live_call

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def other(api: Api) -> AsyncIterator[Database]:
    """A second node on the same database."""
    node = Database(api.db.url)
    yield node
    await node.close()


async def _ringing(db: Database, n: int = 0) -> CallRecord:
    record = live_call(n, "ringing", T)
    await calls.insert_one(db, record)
    return record


async def test_updates_of_different_fields_from_the_same_read_both_survive(api: Api, other: Database) -> None:
    """The engine answers the call while an API node renames the caller: a whole-row save would undo one of them."""
    call = await _ringing(api.db)
    answered = T + timedelta(seconds=4)
    engine_write = calls.transition(
        api.db, call.sid, {"ringing"}, "in-progress", start_time=answered, ring_duration=4, date_updated=answered
    )
    api_write = calls.update_call(other, call.sid, {"caller_name": "Front Desk"})
    done = await asyncio.gather(engine_write, api_write)
    assert all(r is not None for r in done)
    stored = await calls.get(api.db, call.sid)
    assert stored is not None
    assert (stored.status, stored.start_time, stored.ring_duration) == ("in-progress", answered, 4)
    assert stored.caller_name == "Front Desk"
    assert (stored.to, stored.from_) == ("client:bob", "+15551230000")


async def test_of_two_competing_transitions_exactly_one_applies(api: Api, other: Database) -> None:
    """The callee answers on the engine's node while a live modification cancels the call on another node."""
    for n in range(10):
        call = await _ringing(api.db, n)
        answer = calls.transition(api.db, call.sid, {"queued", "ringing"}, "in-progress", start_time=T)
        cancel = calls.transition(other, call.sid, {"queued", "ringing"}, "canceled", end_time=T)
        answered, canceled = await asyncio.gather(answer, cancel)
        assert (answered is None) != (canceled is None), "exactly one transition applies"
        stored = await calls.get(api.db, call.sid)
        assert stored == (answered or canceled)


async def test_a_transition_waits_for_a_concurrent_writer_and_then_sees_its_result(api: Api, other: Database) -> None:
    """On PostgreSQL the second UPDATE blocks on the row and re-checks its WHERE against the committed row."""
    if api.db.dialect != "postgresql":
        pytest.skip("row locks: SQLite serialises writers on the whole database")
    call = await _ringing(api.db)
    async with other.engine.connect() as holder:
        await holder.execute(text("SELECT 1 FROM calls WHERE sid = :sid FOR UPDATE"), {"sid": call.sid})
        cancel = asyncio.create_task(calls.transition(api.db, call.sid, {"ringing"}, "canceled", end_time=T))
        await asyncio.sleep(0.2)
        assert not cancel.done()  # blocked on the row lock
        await holder.execute(text("UPDATE calls SET status = 'in-progress' WHERE sid = :sid"), {"sid": call.sid})
        await holder.commit()
    assert await cancel is None  # the call was answered meanwhile: no cancel
    stored = await calls.get(api.db, call.sid)
    assert stored is not None and stored.status == "in-progress" and stored.end_time is None


async def test_update_of_a_missing_call_or_a_status_that_moved_on_writes_nothing(api: Api) -> None:
    call = await _ringing(api.db)
    assert await calls.update_call(api.db, "ID" + "0" * 32 + "-CA" + "0" * 32, {"caller_name": "x"}) is None
    assert await calls.transition(api.db, call.sid, {"queued"}, "canceled", end_time=T) is None
    assert await calls.get(api.db, call.sid) == call
    with pytest.raises(ValueError, match="sid"):
        await calls.update_call(api.db, call.sid, {"sid": "other"})


async def test_two_nodes_migrating_an_empty_database_at_once(empty_url: str) -> None:
    """Two `callplane migrate` processes (two nodes starting) on one empty database both succeed."""
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from callplane.cli import main; sys.exit(main())",
            "migrate",
            "--database-url",
            empty_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [await r.communicate() for r in runs]
    assert [r.returncode for r in runs] == [0, 0], results
    node = Database(empty_url)
    try:
        async with node.read() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
            assert versions == ["0004"]  # the newest revision
    finally:
        await node.close()


async def test_migration_waits_for_the_advisory_lock(empty_url: str) -> None:
    if not empty_url.startswith("postgresql"):
        pytest.skip("SQLite admits one writer at a time by itself")
    holder, node = Database(empty_url), Database(empty_url)
    try:
        async with holder.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            migrating = asyncio.create_task(node.migrate())
            await asyncio.sleep(0.5)
            assert not migrating.done()
            tables = await conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'alembic_version'"))
            assert tables.scalar_one() == 0  # nothing was created while another node held the lock
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            await conn.commit()
        await migrating
    finally:
        await holder.close()
        await node.close()


async def test_nodes_starting_together_agree_on_one_nonce_secret(api: Api, other: Database) -> None:
    first, second = await asyncio.gather(
        node_settings.setdefault_setting(api.db, "sip_nonce_secret", "a" * 64),
        node_settings.setdefault_setting(other, "sip_nonce_secret", "b" * 64),
    )
    assert first == second == await node_settings.get_setting(api.db, "sip_nonce_secret")
    await node_settings.put_setting(api.db, "k", "1")
    await asyncio.gather(node_settings.put_setting(api.db, "k", "2"), node_settings.put_setting(other, "k", "2"))
    assert await node_settings.get_setting(other, "k") == "2"


def _binding(cseq: int, account: str = ADMIN_SID) -> BindingRow:
    return BindingRow(
        "sip:alice@callplane", "<sip:a@1.2.3.4>", 1e10, "c1", cseq, "1.2.3.4:5060", "UDP", "", INSTANCE, account
    )


async def test_the_same_binding_written_by_two_nodes_at_once(api: Api, other: Database) -> None:
    for cseq in range(1, 20, 2):
        await asyncio.gather(
            regs.apply(api.db, "sip:alice@callplane", [_binding(cseq)], []),
            regs.apply(other, "sip:alice@callplane", [_binding(cseq + 1)], []),
        )
    [row] = await regs.lookup(api.db, "sip:alice@callplane", 0.0)
    assert row.cseq in (19, 20) and row.account_sid == ADMIN_SID


async def test_bindings_belong_to_an_account(api: Api) -> None:
    await regs.apply(api.db, "sip:alice@callplane", [_binding(1)], [])
    assert [b.account_sid for b in await regs.lookup(api.db, "sip:alice@callplane", 0.0, account_sid=ADMIN_SID)] == [
        ADMIN_SID
    ]
    assert await regs.lookup(api.db, "sip:alice@callplane", 0.0, account_sid="AC" + "f" * 32) == []
