"""IncomingPhoneNumbers (restcomm-behaviour §6): numbers the trunk delivers to this cluster, and what answers them.

``phone_number`` is stored in E.164 (``core.phone.to_e164``) and is unique on the cluster, so inbound routing is one
indexed lookup of the normalised Request-URI user.

The listing is ordered by ``(phone_number, sid)`` or ``(friendly_name, sid)``, the columns of the two
``(account_sid, …, sid)`` indexes, so sorting, paging and ``AfterSid`` are index range scans; the filters are a
prefix range on the same columns wherever their pattern has a literal head.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.engine import RowMapping

from callplane.store.db import Database, first_with_status, from_us, to_us
from callplane.store.listing import ListQuery, like, page_rows, prefix_range
from callplane.store.schema import accounts
from callplane.store.schema import incoming_phone_numbers as t

__all__ = [
    "SORT_KEYS",
    "NumberFilter",
    "NumberRecord",
    "add",
    "by_phone_number",
    "get",
    "list_page",
    "remove",
    "update_number",
]

SORT_KEYS = {"PhoneNumber": "phone_number", "FriendlyName": "friendly_name"}


@dataclass(frozen=True, slots=True)
class NumberRecord:
    sid: str
    account_sid: str
    date_created: datetime
    date_updated: datetime
    friendly_name: str
    phone_number: str  # E.164
    voice_url: str | None = None
    voice_method: str = "POST"
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    voice_caller_id_lookup: bool = False
    voice_application_sid: str | None = None
    sms_url: str | None = None
    sms_method: str = "POST"
    sms_fallback_url: str | None = None
    sms_fallback_method: str = "POST"
    sms_application_sid: str | None = None
    ussd_url: str | None = None
    ussd_method: str = "POST"
    ussd_fallback_url: str | None = None
    ussd_fallback_method: str = "POST"
    ussd_application_sid: str | None = None
    refer_url: str | None = None
    refer_method: str = "POST"
    refer_application_sid: str | None = None
    voice_capable: bool = True
    sms_capable: bool = False
    mms_capable: bool = False
    fax_capable: bool = False
    api_version: str = "2012-04-24"


_FLAGS = ("voice_caller_id_lookup", "voice_capable", "sms_capable", "mms_capable", "fax_capable")


def _record(r: RowMapping | Mapping[str, Any]) -> NumberRecord:
    row = dict(r)
    row["date_created"] = from_us(row["date_created"])
    row["date_updated"] = from_us(row["date_updated"])
    for flag in _FLAGS:
        row[flag] = bool(row[flag])
    return NumberRecord(**row)


def _columns(fields: Mapping[str, object]) -> dict[str, object]:
    """NumberRecord field values -> column values (timestamps in microseconds, flags as 0/1)."""
    values = dict(fields)
    for name in ("date_created", "date_updated"):
        if name in values:
            stamp = values[name]
            assert isinstance(stamp, datetime)
            values[name] = to_us(stamp)
    for flag in _FLAGS:
        if flag in values:
            values[flag] = int(bool(values[flag]))
    return values


def _values(rec: NumberRecord) -> dict[str, object]:
    return _columns({name: getattr(rec, name) for name in NumberRecord.__slots__})


async def add(db: Database, rec: NumberRecord) -> None:
    """Insert ``rec``; a number already provisioned raises Conflict."""
    async with db.write() as conn:
        await conn.execute(insert(t).values(**_values(rec)))


async def get(db: Database, sid: str) -> NumberRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.sid == sid))).mappings().first()
    return _record(row) if row is not None else None


_BY_NUMBER = select(t).where(t.c.phone_number == bindparam("number"))


async def by_phone_number(db: Database, e164: str) -> NumberRecord | None:
    """The number ``e164`` (already normalised), whichever account holds it. One unit of work (``Database.run``):
    every inbound INVITE asks, so it takes the store's cheap path."""
    row = await db.run(lambda conn: conn.execute(_BY_NUMBER, {"number": e164}).mappings().first())
    return _record(row) if row is not None else None


_FOR_CALL = (
    select(t, accounts.c.status.label("account_status"))
    .join(accounts, accounts.c.sid == t.c.account_sid)
    .where(t.c.phone_number == bindparam("number"))
)


async def for_inbound_call(db: Database, e164: str) -> tuple[NumberRecord, str] | None:
    """The number ``e164`` (already normalised) and its account's status, in one query on the store's cheap path:
    every inbound INVITE to a number asks."""
    found = await first_with_status(db, _FOR_CALL, {"number": e164})
    return None if found is None else (_record(found[0]), found[1])


_FIXED = frozenset({"sid", "account_sid", "phone_number", "date_created"})


async def update_number(db: Database, sid: str, changes: Mapping[str, object]) -> NumberRecord | None:
    """Write ``changes`` (NumberRecord field names; the sid, owner, number and creation date are fixed) to one number,
    touching only those columns. Returns the number as written, or None when there is no such number."""
    unknown = set(changes) - (set(NumberRecord.__slots__) - _FIXED)
    if unknown or not changes:
        raise ValueError(f"not changeable number fields: {sorted(unknown) or 'none given'}")
    stmt = update(t).where(t.c.sid == sid).values(**_columns(changes)).returning(*t.c)
    async with db.write() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    return _record(row) if row is not None else None


async def remove(db: Database, sid: str) -> bool:
    """Delete one number; False when there was none. Inbound routing stops finding it at once."""
    async with db.write() as conn:
        result = await conn.execute(delete(t).where(t.c.sid == sid))
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class NumberFilter:
    """Already-validated list filters (the API parses and reports bad input).

    ``phone_number``: digits and ``*`` (any one digit), optionally after a leading ``+``. With the ``+`` it matches
    the start of the stored number, without it any part. ``friendly_name``: the whole name, case-sensitive, where
    ``%`` (any run) and ``_`` (one character) are wildcards.
    """

    phone_number: str | None = None
    friendly_name: str | None = None


def _anchored(dialect: str, column: Any, pattern: str) -> list[ColumnElement[bool]]:
    """``column LIKE pattern``, with the pattern's literal head (up to the first wildcard) as an index range; a plain
    prefix (``head%``) is the range alone, a pattern without wildcards an equality."""
    head = re.split("[%_]", pattern, maxsplit=1)[0]
    if head == pattern:
        return [column == pattern]
    bounded = prefix_range(column, head)
    if bounded is None:
        return [like(dialect, column, pattern)]
    return [bounded] if pattern == head + "%" else [bounded, like(dialect, column, pattern)]


def _where(dialect: str, account_sid: str, f: NumberFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [t.c.account_sid == account_sid]
    if f.phone_number:
        pattern = f.phone_number.replace("*", "_")
        if pattern.startswith("+"):
            clauses += _anchored(dialect, t.c.phone_number, pattern + "%")
        else:
            clauses.append(like(dialect, t.c.phone_number, f"%{pattern}%"))
    if f.friendly_name:
        clauses += _anchored(dialect, t.c.friendly_name, f.friendly_name)
    return clauses


async def list_page(
    db: Database,
    account_sid: str,
    query: ListQuery,
    f: NumberFilter | None = None,
    *,
    sort_key: str = "phone_number",
    descending: bool = False,
) -> tuple[int, list[NumberRecord]]:
    """The account's numbers matching ``f``, ordered by ``sort_key`` (a :data:`SORT_KEYS` value) then sid."""
    if sort_key not in SORT_KEYS.values():
        raise ValueError(f"cannot sort numbers by {sort_key!r}")
    where = _where(db.dialect, account_sid, f or NumberFilter())
    order = (t.c[sort_key], t.c.sid)
    total, rows = await page_rows(db, t, where, query, order=order, descending=descending)
    return total, [_record(r) for r in rows]
