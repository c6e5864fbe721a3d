"""The call engine's tables on both backends: the callback outbox, notifications, recordings, batched call updates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callplane.store import calls, notifications, recordings
from callplane.store.db import Database
from callplane.store.listing import ListQuery, UnknownCursor
from callplane.store.notifications import NotificationRecord
from callplane.store.outbox import TableOutbox, enqueue, remove_many, reschedule_many
from callplane.store.recordings import RecordingRecord
from tests.api.conftest import ADMIN_SID, T0, Api
from tests.statements import statements
from tests.store.records import live_call

NODE = "ID" + "1" * 32
OTHER = "ID" + "2" * 32


async def _queue(api: Api, node: str, call: str, n: int, now: float) -> None:
    async with api.db.write() as conn:
        await enqueue(
            conn,
            instance_id=node,
            call_sid=call,
            account_sid=ADMIN_SID,
            url="http://app/status",
            method="POST",
            params=[("CallStatus", f"e{n}"), ("SipHeader_Diversion", "a"), ("SipHeader_Diversion", "b")],
            now=now,
        )


async def test_outbox_gives_one_head_per_call_in_id_order(api: Api) -> None:
    box = TableOutbox(api.db, NODE)
    for n in range(3):
        await _queue(api, NODE, "CA1", n, 100.0)
    await _queue(api, NODE, "CA2", 0, 50.0)
    await _queue(api, OTHER, "CA3", 0, 10.0)  # another node's row is not ours to send
    heads = await box.due(200.0, 10, frozenset())
    assert [(h.call_sid, h.params[0][1]) for h in heads] == [("CA2", "e0"), ("CA1", "e0")]
    assert heads[0].params == (("CallStatus", "e0"), ("SipHeader_Diversion", "a"), ("SipHeader_Diversion", "b"))
    assert await box.next_due() == 50.0
    assert [h.call_sid for h in await box.due(200.0, 10, frozenset({"CA2"}))] == ["CA1"]
    assert await box.due(60.0, 10, frozenset()) == [heads[0]]

    # CA1's head is retried later: CA1's next rows wait behind it
    await api.db.run(lambda conn: reschedule_many(conn, [(heads[1].id, 1, 300.0)]))
    assert [h.call_sid for h in await box.due(200.0, 10, frozenset())] == ["CA2"]
    await api.db.run(lambda conn: remove_many(conn, [heads[1].id]))
    (again,) = await box.due(200.0, 10, frozenset({"CA2"}))
    assert (again.call_sid, again.params[0][1], again.attempts) == ("CA1", "e1", 0)
    assert await box.pending() == 3
    assert await box.pending("CA1") == 2


async def test_outbox_rows_roll_back_with_the_transaction(api: Api) -> None:
    box = TableOutbox(api.db, NODE)
    with pytest.raises(RuntimeError):
        async with api.db.write() as conn:
            await enqueue(
                conn,
                instance_id=NODE,
                call_sid="CA1",
                account_sid=ADMIN_SID,
                url="http://x",
                method="GET",
                params=(),
                now=1.0,
            )
            raise RuntimeError("the call-state write failed")
    assert await box.pending() == 0
    assert await box.next_due() is None


async def test_notifications_round_trip_and_list(api: Api) -> None:
    for i in range(5):
        await notifications.add(
            api.db,
            NotificationRecord(
                sid=f"NO{i:032x}",
                account_sid=ADMIN_SID,
                call_sid="CA1" if i % 2 else "CA2",
                date_created=T0 + timedelta(seconds=i),
                log=notifications.ERROR,
                error_code=11200,
                message_text=f"POST http://app/rcml: HTTP 500 ({i})",
                request_url="http://app/rcml",
                request_method="POST",
            ),
        )
    total, page = await notifications.list_page(api.db, ADMIN_SID, ListQuery(page_size=2))
    assert total == 5
    assert [n.sid for n in page] == [f"NO{4:032x}", f"NO{3:032x}"]
    total, page = await notifications.list_page(api.db, ADMIN_SID, ListQuery(page_size=2, after_sid=page[-1].sid))
    assert [n.sid for n in page] == [f"NO{2:032x}", f"NO{1:032x}"]
    total, by_call = await notifications.list_page(api.db, ADMIN_SID, ListQuery(), call_sid="CA1")
    assert total == 2 and {n.call_sid for n in by_call} == {"CA1"}
    one = await notifications.get(api.db, f"NO{3:032x}")
    assert one is not None and one.message_text.endswith("(3)") and one.request_method == "POST"
    with pytest.raises(UnknownCursor):
        await notifications.list_page(api.db, ADMIN_SID, ListQuery(after_sid="NOnope"))


async def test_recordings_round_trip_list_and_remove(api: Api) -> None:
    rec = RecordingRecord(
        sid="RE" + "f" * 32, account_sid=ADMIN_SID, call_sid="CA1", date_created=T0, duration_ms=3020, file="x.wav"
    )
    await recordings.add(api.db, rec)
    assert await recordings.get(api.db, rec.sid) == rec
    assert await recordings.list_page(api.db, ADMIN_SID, ListQuery(), call_sid="CA1") == (1, [rec])
    assert await recordings.list_page(api.db, ADMIN_SID, ListQuery(), call_sid="CA2") == (0, [])
    assert await recordings.remove(api.db, rec.sid)
    assert not await recordings.remove(api.db, rec.sid)
    assert await recordings.get(api.db, rec.sid) is None


async def test_a_chain_of_one_calls_transitions_is_one_row_update(api: Api) -> None:
    """A dialled leg's initiated, ringing and in-progress in one batch: one UPDATE, the record as if each had been
    written in turn; and a chain whose first step finds the call moved on is tried step by step."""
    db: Database = api.db
    first, second = live_call(1, "queued", T0), live_call(2, "ringing", T0)
    await calls.insert_many(db, [first, second])
    later = T0 + timedelta(seconds=2)
    chain = [
        (first.sid, {"status": "initiated", "date_updated": later}, "queued"),
        (second.sid, {"status": "ringing", "date_updated": later}, "queued"),  # second is ringing already: refused
        (first.sid, {"status": "ringing", "date_updated": later}, "initiated"),
        (second.sid, {"status": "in-progress", "start_time": later}, "ringing"),  # applies on its own
        (first.sid, {"status": "in-progress", "start_time": later, "answered_by": "bob"}, "ringing"),
    ]
    with statements(db) as seen:
        applied = await db.run(lambda conn: calls.update_calls_with(conn, chain))
    assert applied == [True, False, True, True, True]
    # first's chain: one statement; second's: the merged try, then its two steps alone
    assert sum(s.startswith("UPDATE calls") for s in seen) == 4
    one, two = await calls.get(db, first.sid), await calls.get(db, second.sid)
    assert one is not None and (one.status, one.start_time, one.answered_by, one.date_updated) == (
        "in-progress",
        later,
        "bob",
        later,
    )
    assert two is not None and (two.status, two.start_time, two.date_updated) == ("in-progress", later, T0)


async def test_a_batch_where_one_call_moved_on_reports_exactly_which_updates_applied(api: Api) -> None:
    """Three calls' updates of one shape in one statement; another node had already moved the second on. The
    first and third applied and must be reported so (their status callbacks depend on it), the second not."""
    db: Database = api.db
    records = [live_call(n, "ringing", T0) for n in (1, 2, 3)]
    await calls.insert_many(db, records)
    assert await db.run(
        lambda conn: calls.update_calls_with(conn, [(records[1].sid, {"status": "canceled"}, "ringing")])
    ) == [True]
    later = T0 + timedelta(seconds=2)
    batch = [(r.sid, {"status": "in-progress", "start_time": later, "date_updated": later}, "ringing") for r in records]
    applied = await db.run(lambda conn: calls.update_calls_with(conn, batch))
    assert applied == [True, False, True]
    stored = [await calls.get(db, r.sid) for r in records]
    assert [(s.status, s.start_time) for s in stored if s is not None] == [
        ("in-progress", later),
        ("canceled", None),
        ("in-progress", later),
    ]
