"""The store on both backends: synthetic bulk loads, record round trips, stale-call fix-up, error translation."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from callplane.core.errors import Conflict
from callplane.core.ids import IdSource
from callplane.core.secrets import hash_token
from callplane.store import accounts, calls
from callplane.store.accounts import AccountRecord
from callplane.store.calls import DIRECTIONS, STATUSES, CallQuery
from callplane.store.db import Database
from callplane.store.synthetic import generate
from tests.api.conftest import ADMIN_SID, T0, Api
from tests.store.records import INSTANCE, live_call

ACCOUNT = "AC" + "a" * 32
NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_bulk_load_of_synthetic_records(api: Api) -> None:
    db = api.db
    loaded = await calls.bulk_load(db, generate(ACCOUNT, "ID" + "1" * 32, 3000, now=NOW, batch=700))
    assert loaded == 3000
    page = await calls.list_page(db, CallQuery(account_sid=ACCOUNT, page_size=1000, limit=5000))
    assert page.total == 3000
    records = [*page.records]
    for n in (1, 2):
        records += (await calls.list_page(db, CallQuery(account_sid=ACCOUNT, page=n, page_size=1000))).records
    assert len({r.sid for r in records}) == 3000
    statuses, directions = Counter(r.status for r in records), Counter(r.direction for r in records)
    assert set(statuses) == set(STATUSES) and set(directions) == set(DIRECTIONS)
    assert statuses["completed"] > 1000
    assert all(NOW - timedelta(days=90) <= r.date_created <= NOW for r in records)
    sids = {r.sid for r in records}
    children = [r for r in records if r.parent_call_sid]
    assert len(children) > 100 and all(c.parent_call_sid in sids and c.direction == "outbound-dial" for c in children)
    identities = {r.to.split(":")[0] for r in records} | {r.from_.split(":")[0] for r in records}
    assert {"client", "sip"} <= identities and any(x.isdigit() for x in identities)
    for r in records:
        if r.status == "completed":
            assert r.start_time and r.end_time and r.duration is not None
            assert r.duration == -(-int((r.end_time - r.start_time).total_seconds() * 1e6) // 1_000_000)
    # The secondary indexes dropped for the load are back.
    async with db.read() as conn:
        names = await conn.run_sync(lambda sync: {i["name"] for i in inspect(sync).get_indexes("calls")})
    assert {"ix_calls_account_date", "ix_calls_account_recipient_rev", "ix_calls_parent"} <= names


async def test_duplicate_sid_is_a_conflict(api: Api) -> None:
    record = next(generate(ACCOUNT, "ID" + "1" * 32, 1, now=NOW))[0]
    await calls.insert_one(api.db, record)
    with pytest.raises(Conflict):
        await calls.insert_one(api.db, record)


async def test_complete_stale_closes_only_this_nodes_live_calls(api: Api) -> None:
    mine, other = "ID" + "1" * 32, "ID" + "2" * 32
    rows = [r for batch in generate(ACCOUNT, mine, 400, now=NOW) for r in batch]
    rows += [r for batch in generate(ACCOUNT, other, 50, now=NOW, seed=3) for r in batch]
    await calls.insert_many(api.db, rows)
    live = {"queued", "ringing", "in-progress"}
    expected = sum(1 for r in rows if r.instance_id == mine and r.status in live)
    assert await calls.complete_stale(api.db, mine, NOW) == expected
    after = {r.sid: r for r in (await calls.list_page(api.db, CallQuery(ACCOUNT, page_size=1000))).records}
    assert not any(r.status in live for r in after.values() if r.instance_id == mine)
    assert any(r.status in live for r in after.values() if r.instance_id == other)


async def test_round_trip_keeps_microseconds_and_nulls(db: Database) -> None:
    ids = IdSource(1)
    await accounts.create(db, AccountRecord(ADMIN_SID, "a", "active", hash_token("x" * 16, iterations=1), T0, T0))
    when = datetime(2025, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    record = calls.CallRecord(
        sid=ids.call_sid("ID" + "0" * 32),
        instance_id="ID" + "0" * 32,
        account_sid=ADMIN_SID,
        date_created=when,
        date_updated=when,
        to="client:ünïcode",
        from_="+1",
        status="queued",
        direction="outbound-api",
    )
    await calls.insert_one(db, record)
    assert await calls.get(db, record.sid) == record


async def test_complete_stale_gives_each_call_the_outcome_of_a_hang_up(api: Api) -> None:
    """Answered calls complete with ceil(end - start) seconds; queued and ringing ones are canceled."""
    talking = live_call(1, "in-progress", NOW - timedelta(seconds=30), NOW - timedelta(seconds=10, microseconds=200))
    ringing = live_call(2, "ringing", NOW - timedelta(seconds=7, milliseconds=500))
    queued = live_call(3, "queued", NOW - timedelta(seconds=2))
    await calls.insert_many(api.db, [talking, ringing, queued])
    assert await calls.complete_stale(api.db, INSTANCE, NOW) == 3
    got = {r.sid: r for r in (await calls.list_page(api.db, CallQuery(ACCOUNT))).records}
    t, r, q = got[talking.sid], got[ringing.sid], got[queued.sid]
    assert (t.status, t.end_time, t.duration) == ("completed", NOW, 11)
    assert (r.status, r.end_time, r.duration, r.ring_duration) == ("canceled", NOW, 0, 8)
    assert (q.status, q.end_time, q.duration, q.ring_duration) == ("canceled", NOW, 0, None)
    assert t.date_updated == r.date_updated == q.date_updated == NOW


async def test_a_unit_of_work_commits_whole_or_not_at_all(api: Api) -> None:
    """``Database.run`` (the writer's path: on SQLite the store's own thread): a unit that fails leaves nothing, and
    a duplicate key is the store's Conflict."""
    first, second = live_call(1, "queued", NOW), live_call(2, "queued", NOW)
    assert await api.db.run(lambda conn: calls.insert_many_with(conn, [first])) == 1

    def both_then_fail(conn: Connection) -> int:
        calls.insert_many_with(conn, [second])
        raise RuntimeError("the unit fails after its first statement")

    with pytest.raises(RuntimeError):
        await api.db.run(both_then_fail)
    assert await calls.get(api.db, second.sid) is None
    with pytest.raises(Conflict):
        await api.db.run(lambda conn: calls.insert_many_with(conn, [second, first]))
    assert await calls.get(api.db, second.sid) is None
    assert await calls.get(api.db, first.sid) == first
