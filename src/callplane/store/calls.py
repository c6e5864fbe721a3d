"""Call records (CDRs): insert, update, get one, and the filtered, sorted, paged listing.

Listing design (Restcomm scanned an unindexed table; we do not):
- every query is scoped to one account and ordered by ``(key, date_created, sid)`` in a single direction, which one
  composite index per sortable key serves for both ORDER BY and the ``AfterSid`` keyset predicate;
- To/From are suffix matches (``LIKE '%value'``), answered as a prefix range on the reversed column;
- the count behind ``total`` stops at ``Limit`` (default 10,000), so it is bounded work whatever the table size.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, insert, literal, select, tuple_, update
from sqlalchemy.engine import Connection, RowMapping

from callplane.core.errors import NotFound
from callplane.store.db import Database, from_us, to_us
from callplane.store.listing import like, prefix_range
from callplane.store.schema import calls

STATUSES = ("queued", "ringing", "in-progress", "canceled", "completed", "failed", "busy", "no-answer")
DIRECTIONS = ("inbound", "outbound-api", "outbound-dial")
SORT_KEYS = {
    "DateCreated": "date_created",
    "From": "sender",
    "To": "recipient",
    "Direction": "direction",
    "Status": "status",
    "Duration": "duration",
}


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call leg as stored. Statuses are lowercase-hyphenated only."""

    sid: str
    instance_id: str
    account_sid: str
    date_created: datetime
    date_updated: datetime
    to: str
    from_: str
    status: str
    direction: str
    parent_call_sid: str | None = None
    phone_number_sid: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    ring_duration: int | None = None
    answered_by: str | None = None
    api_version: str = "2012-04-24"
    forwarded_from: str | None = None
    caller_name: str | None = None
    conference_sid: str | None = None


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Already-validated list parameters (the API parses and reports bad input)."""

    to: str | None = None
    from_: str | None = None
    status: str | None = None
    started_at_or_after: datetime | None = None
    ended_before: datetime | None = None  # exclusive bound
    ended_at_or_before: datetime | None = None  # inclusive bound
    parent_call_sid: str | None = None


@dataclass(frozen=True, slots=True)
class CallQuery:
    account_sid: str
    filter: CallFilter = field(default_factory=CallFilter)
    sort_key: str = "date_created"
    descending: bool = True
    page: int = 0
    page_size: int = 50
    limit: int = 10_000
    after_sid: str | None = None


@dataclass(frozen=True, slots=True)
class CallPage:
    total: int  # matching records, capped at the query's limit
    records: list[CallRecord]


class UnknownCursor(NotFound):
    """``AfterSid`` names no call of this account."""


def _nullable_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def values_of(record: CallRecord) -> dict[str, Any]:
    return {
        "sid": record.sid,
        "instance_id": record.instance_id,
        "parent_call_sid": record.parent_call_sid,
        "account_sid": record.account_sid,
        "date_created": to_us(record.date_created),
        "date_updated": to_us(record.date_updated),
        "recipient": record.to,
        "sender": record.from_,
        "recipient_rev": record.to[::-1],
        "sender_rev": record.from_[::-1],
        "phone_number_sid": record.phone_number_sid,
        "status": record.status,
        "start_time": _nullable_us(record.start_time),
        "end_time": _nullable_us(record.end_time),
        "duration": (record.duration or 0) if record.end_time is not None else 0,
        "ring_duration": record.ring_duration,
        "direction": record.direction,
        "answered_by": record.answered_by,
        "api_version": record.api_version,
        "forwarded_from": record.forwarded_from,
        "caller_name": record.caller_name,
        "conference_sid": record.conference_sid,
    }


_COLUMNS = [c for c in calls.c if c.name not in ("recipient_rev", "sender_rev")]


def record_from_row(row: Mapping[str, Any] | RowMapping) -> CallRecord:
    start, end = row["start_time"], row["end_time"]
    return CallRecord(
        sid=row["sid"],
        instance_id=row["instance_id"],
        account_sid=row["account_sid"],
        date_created=from_us(row["date_created"]),
        date_updated=from_us(row["date_updated"]),
        to=row["recipient"],
        from_=row["sender"],
        status=row["status"],
        direction=row["direction"],
        parent_call_sid=row["parent_call_sid"],
        phone_number_sid=row["phone_number_sid"],
        start_time=None if start is None else from_us(start),
        end_time=None if end is None else from_us(end),
        # Duration is known once the call has ended; until then it is absent, not zero.
        duration=row["duration"] if end is not None else None,
        ring_duration=row["ring_duration"],
        answered_by=row["answered_by"],
        api_version=row["api_version"],
        forwarded_from=row["forwarded_from"],
        caller_name=row["caller_name"],
        conference_sid=row["conference_sid"],
    )


async def insert_one(db: Database, record: CallRecord) -> None:
    async with db.write() as conn:
        await conn.execute(insert(calls).values(**values_of(record)))


_INSERT = insert(calls)


def insert_many_with(conn: Connection, records: Iterable[CallRecord]) -> int:
    """:func:`insert_many` inside the caller's transaction (a unit of ``Database.run``)."""
    rows = [values_of(r) for r in records]
    if rows:
        conn.execute(_INSERT, rows)
    return len(rows)


async def insert_many(db: Database, records: Iterable[CallRecord]) -> int:
    items = list(records)
    return await db.run(lambda conn: insert_many_with(conn, items))


async def bulk_load(db: Database, batches: Iterable[list[CallRecord]]) -> int:
    """:func:`bulk_load_rows` for records."""
    return await bulk_load_rows(db, ([values_of(r) for r in batch] for batch in batches))


async def bulk_load_rows(db: Database, batches: Iterable[list[dict[str, Any]]]) -> int:
    """Load many records quickly: the secondary indexes are dropped, the rows inserted, the indexes rebuilt.

    Building an index from sorted data is about ten times cheaper than maintaining it row by row. Queries that run
    meanwhile stay correct but scan, so this is a tool for demos and benchmarks on an idle node.
    """
    indexes = sorted(calls.indexes, key=lambda i: str(i.name))

    def drop(sync: Connection) -> None:
        for index in indexes:
            index.drop(sync, checkfirst=True)

    def create(sync: Connection) -> None:
        for index in indexes:
            index.create(sync, checkfirst=True)

    async with db.write() as conn:
        await conn.run_sync(drop)
    done = 0
    try:
        async with db.write() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            columns = [c.name for c in calls.c]
            for batch in batches:
                rows = [tuple(v[c] for c in columns) for v in batch]
                if db.dialect == "postgresql":
                    await raw.copy_records_to_table("calls", records=rows, columns=columns)
                else:
                    marks = ", ".join("?" * len(columns))
                    await raw.executemany(f"INSERT INTO calls ({', '.join(columns)}) VALUES ({marks})", rows)
                done += len(rows)
    finally:
        async with db.write() as conn:
            await conn.run_sync(create)
    await db.analyze()
    return done


# CallRecord fields that name a different column (the rest share their name with the column).
_FIELD_COLUMN = {"to": "recipient", "from_": "sender"}
_FIXED_FIELDS = ("sid", "account_sid", "date_created")


_CHANGEABLE = frozenset(f.name for f in fields(CallRecord)) - set(_FIXED_FIELDS)


def _column_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """CallRecord field names and values -> column values (timestamps in microseconds, reversed To/From kept)."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in _CHANGEABLE:
            raise ValueError(f"{name!r} is not a changeable call field")
        column = _FIELD_COLUMN.get(name, name)
        if isinstance(value, datetime):
            value = to_us(value)
        if name == "duration" and value is None:
            value = 0  # the column is NOT NULL; the record reads it back as absent until the call has ended
        out[column] = value
        if column in ("recipient", "sender"):
            out[column + "_rev"] = str(value)[::-1]
    return out


_BATCH_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _batch_statement(columns: tuple[str, ...]) -> Any:
    stmt = _BATCH_STATEMENTS.get(columns)
    if stmt is None:
        stmt = (
            update(calls)
            .where(calls.c.sid == bindparam("b_sid"), calls.c.status == bindparam("b_expect"))
            .values({c: bindparam(c) for c in columns})
        )
        _BATCH_STATEMENTS[columns] = stmt
    return stmt


def update_calls_with(conn: Connection, updates: Sequence[tuple[str, Mapping[str, Any], str]]) -> list[bool]:
    """Many conditional updates ``(sid, changes, expected status)`` in the caller's transaction, in order, as few
    statements as possible (one executemany per shape); True for each that applied.

    A chain of updates of one call, each expecting the status the one before it sets (a dialled leg's
    ``initiated``, ``ringing`` and ``in-progress`` often land in one batch), is written as one row update: the
    first one's condition and every change, the later ones winning. Within one transaction the first applying
    means the rest apply too; when it does not, the chain's updates are tried one by one, in order, as before.
    Updates of one call keep their order: the list is cut into runs in which no call repeats, and only the updates
    of one run are grouped by shape.
    """
    chains: list[list[int]] = []
    last: dict[str, list[int]] = {}  # sid -> the chain holding its latest update
    for i, (sid, _, expect) in enumerate(updates):
        chain = last.get(sid)
        if chain is not None and updates[chain[-1]][1].get("status") == expect:
            chain.append(i)
        else:
            chain = [i]
            chains.append(chain)
            last[sid] = chain
    if len(chains) == len(updates):
        return _update_runs(conn, updates)
    merged: list[tuple[str, Mapping[str, Any], str]] = []
    for chain in chains:
        sid, changes, expect = updates[chain[0]]
        if len(chain) > 1:
            changes = {k: v for i in chain for k, v in updates[i][1].items()}
        merged.append((sid, changes, expect))
    applied = _update_runs(conn, merged)
    results = [False] * len(updates)
    for chain, ok in zip(chains, applied, strict=True):
        if ok:
            for i in chain:
                results[i] = True
        elif len(chain) > 1:  # the first did not apply (the call moved on elsewhere): each on its own, in order
            for i, one in zip(chain, _update_runs(conn, [updates[i] for i in chain]), strict=True):
                results[i] = one
    return results


def _update_runs(conn: Connection, updates: Sequence[tuple[str, Mapping[str, Any], str]]) -> list[bool]:
    """:func:`update_calls_with` without the chains: runs of distinct calls, one executemany per shape in each."""
    results: list[bool] = [False] * len(updates)
    run: list[int] = []
    seen: set[str] = set()

    def flush() -> None:
        shapes: dict[tuple[str, ...], list[int]] = {}
        rows: dict[int, dict[str, Any]] = {}
        for i in run:
            sid, changes, expect = updates[i]
            values = _column_values(changes)
            rows[i] = {**values, "b_sid": sid, "b_expect": expect}
            shapes.setdefault(tuple(sorted(values)), []).append(i)
        for columns, members in shapes.items():
            stmt = _batch_statement(columns)
            result = conn.execute(stmt, [rows[i] for i in members])
            if result.rowcount == len(members):
                for i in members:
                    results[i] = True
                continue
            if len(members) == 1:
                continue  # it did not apply
            # Someone else moved a call on, so some did not apply. Running them again would tell nothing (the ones
            # that applied no longer match their condition): the rows that now hold every value the statement wrote
            # are the ones it changed (the times it writes are this update's own, to the microsecond).
            found = {
                r["sid"]: r
                for r in conn.execute(
                    select(calls.c.sid, *(calls.c[c] for c in columns)).where(
                        calls.c.sid.in_([updates[i][0] for i in members])
                    )
                ).mappings()
            }
            for i in members:
                row = found.get(updates[i][0])
                results[i] = row is not None and all(row[c] == rows[i][c] for c in columns)
        run.clear()
        seen.clear()

    for i, (sid, _, _) in enumerate(updates):
        if sid in seen:
            flush()
        run.append(i)
        seen.add(sid)
    if run:
        flush()
    return results


async def update_call(
    db: Database, sid: str, changes: Mapping[str, Any], *, expect_status: Collection[str] | None = None
) -> CallRecord | None:
    """Write ``changes`` (CallRecord field names) to one call, only if its status is one of ``expect_status``.

    One ``UPDATE … WHERE sid = ? AND status IN (…)`` that touches only the named columns: two writers (the engine
    that owns the call, an API node modifying it live, on one node or two) never overwrite each other's fields,
    and of two status transitions from the same state exactly one applies. Returns the record as written, or
    ``None`` when nothing was written (no such call, or its status had already moved on).
    """
    values = _column_values(changes)
    if not values:
        raise ValueError("update_call needs at least one change")
    stmt = update(calls).where(calls.c.sid == sid)
    if expect_status is not None:
        stmt = stmt.where(calls.c.status.in_(list(expect_status)))
    async with db.write() as conn:
        row = (await conn.execute(stmt.values(**values).returning(*_COLUMNS))).mappings().first()
    return record_from_row(row) if row else None


async def transition(
    db: Database, sid: str, from_statuses: Collection[str], to_status: str, **fields: Any
) -> CallRecord | None:
    """Move a call from one of ``from_statuses`` to ``to_status`` and write ``fields`` with it (see update_call)."""
    if to_status not in STATUSES:
        raise ValueError(f"unknown call status {to_status!r}")
    return await update_call(db, sid, {**fields, "status": to_status}, expect_status=from_statuses)


async def get(db: Database, sid: str) -> CallRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(*_COLUMNS).where(calls.c.sid == sid))).mappings().first()
    return record_from_row(row) if row else None


def _suffix_match(dialect: str, forward: Any, reversed_col: Any, value: str) -> ColumnElement[bool]:
    """Restcomm's ``LIKE '%value'``, case-sensitive and with the same answers on every backend.

    Without wildcards it is a prefix range on the reversed column (an index range scan). With them, ``%`` and ``_``
    are the only special characters; everything else, a backslash included, matches itself.
    """
    if "%" not in value and "_" not in value:
        prefix = prefix_range(reversed_col, value[::-1])
        if prefix is not None:
            return prefix
    return like(dialect, forward, "%" + value)


def _where(dialect: str, query: CallQuery) -> list[ColumnElement[bool]]:
    f = query.filter
    clauses: list[ColumnElement[bool]] = [calls.c.account_sid == query.account_sid]
    if f.to:
        clauses.append(_suffix_match(dialect, calls.c.recipient, calls.c.recipient_rev, f.to))
    if f.from_:
        clauses.append(_suffix_match(dialect, calls.c.sender, calls.c.sender_rev, f.from_))
    if f.status:
        clauses.append(calls.c.status == f.status)
    if f.started_at_or_after is not None:
        clauses.append(calls.c.start_time >= to_us(f.started_at_or_after))
    if f.ended_before is not None:
        clauses.append(calls.c.end_time < to_us(f.ended_before))
    if f.ended_at_or_before is not None:
        clauses.append(calls.c.end_time <= to_us(f.ended_at_or_before))
    if f.parent_call_sid is not None:
        clauses.append(calls.c.parent_call_sid == f.parent_call_sid)
    return clauses


def _order_columns(query: CallQuery) -> Sequence[Any]:
    if query.sort_key == "date_created":
        return (calls.c.date_created, calls.c.sid)
    return (calls.c[query.sort_key], calls.c.date_created, calls.c.sid)


async def list_page(db: Database, query: CallQuery) -> CallPage:
    """One page of the listing and the (``Limit``-capped) number of matches."""
    where = _where(db.dialect, query)
    order = _order_columns(query)
    async with db.read() as conn:
        capped = select(literal(1)).select_from(calls).where(*where).limit(query.limit).subquery()
        total = int((await conn.execute(select(func.count()).select_from(capped))).scalar_one())
        first = query.page * query.page_size
        wanted = min(query.page_size, total - first)
        if wanted <= 0:
            return CallPage(total=total, records=[])
        stmt = select(*_COLUMNS).where(*where)
        if query.after_sid is not None:
            cursor_row = (
                await conn.execute(
                    select(*order).where(calls.c.sid == query.after_sid, calls.c.account_sid == query.account_sid)
                )
            ).first()
            if cursor_row is None:
                raise UnknownCursor(f"AfterSid {query.after_sid} is not a call of this account")
            keys = tuple_(*order)
            values = tuple_(*(literal(v) for v in cursor_row))
            stmt = stmt.where(keys < values if query.descending else keys > values)
        else:
            stmt = stmt.offset(first)
        stmt = stmt.order_by(*(c.desc() if query.descending else c.asc() for c in order)).limit(wanted)
        rows = (await conn.execute(stmt)).mappings().all()
    return CallPage(total=total, records=[record_from_row(r) for r in rows])


# What a hang-up by the node would have made of a call in each live status (see docs/compatibility.md).
STALE_OUTCOME = {"queued": "canceled", "ringing": "canceled", "in-progress": "completed"}


def _ceil_seconds(later: Any, earlier: Any) -> Any:
    """Whole seconds from ``earlier`` to ``later`` (microsecond columns or values), rounded up, as SQL."""
    return (later - earlier + 999_999) // 1_000_000


async def complete_stale(db: Database, instance_id: str, when: datetime) -> int:
    """On start-up, a node ends the records its previous life left unfinished (calls cannot outlive a restart).

    Each gets the outcome a hang-up at that point would have given: a call that was answered is ``completed`` with
    ``duration`` = ceil(end - start); a queued or ringing one is ``canceled`` with duration 0, and a ringing one
    keeps how long it rang as ``ring_duration``.
    """
    end = to_us(when)
    answered_for = _ceil_seconds(literal(end), calls.c.start_time)
    rang_for = _ceil_seconds(literal(end), calls.c.date_created)
    extra: dict[str, dict[str, Any]] = {
        "in-progress": {"duration": func.coalesce(answered_for, 0)},
        "ringing": {"duration": 0, "ring_duration": func.coalesce(calls.c.ring_duration, rang_for)},
        "queued": {"duration": 0},
    }
    ended = 0
    async with db.write() as conn:
        for status, values in extra.items():
            result = await conn.execute(
                update(calls)
                .where(calls.c.instance_id == instance_id, calls.c.status == status)
                .values(status=STALE_OUTCOME[status], end_time=end, date_updated=end, **values)
            )
            ended += int(result.rowcount)
    return ended
