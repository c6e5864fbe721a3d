"""Notifications: what went wrong (or deserves a warning) while running a call, as Restcomm's Notifications API
shows them. Written by the engine (RCML fetch failures, invalid attributes, failed status callbacks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, select
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from callplane.store.db import Database, from_us, to_us
from callplane.store.listing import ListQuery, page_rows
from callplane.store.schema import notifications as t

__all__ = ["ERROR", "WARNING", "NotificationRecord", "add", "get", "insert_with", "list_page"]

ERROR = 0
WARNING = 1


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    sid: str
    account_sid: str
    call_sid: str | None
    date_created: datetime
    log: int
    error_code: int
    message_text: str
    more_info: str = ""
    request_url: str = ""
    request_method: str = ""
    request_variables: str = ""
    response_headers: str = ""
    response_body: str = ""
    api_version: str = "2012-04-24"


def _values(n: NotificationRecord) -> dict[str, Any]:
    return {
        "sid": n.sid,
        "account_sid": n.account_sid,
        "call_sid": n.call_sid,
        "date_created": to_us(n.date_created),
        "api_version": n.api_version,
        "log": n.log,
        "error_code": n.error_code,
        "more_info": n.more_info,
        "message_text": n.message_text,
        "request_url": n.request_url,
        "request_method": n.request_method,
        "request_variables": n.request_variables,
        "response_headers": n.response_headers,
        "response_body": n.response_body,
    }


def _record(r: RowMapping) -> NotificationRecord:
    return NotificationRecord(
        sid=r["sid"],
        account_sid=r["account_sid"],
        call_sid=r["call_sid"],
        date_created=from_us(r["date_created"]),
        log=r["log"],
        error_code=r["error_code"],
        message_text=r["message_text"],
        more_info=r["more_info"],
        request_url=r["request_url"],
        request_method=r["request_method"],
        request_variables=r["request_variables"],
        response_headers=r["response_headers"],
        response_body=r["response_body"],
        api_version=r["api_version"],
    )


async def insert_with(conn: AsyncConnection, n: NotificationRecord) -> None:
    """Insert inside the caller's transaction."""
    await conn.execute(insert(t).values(**_values(n)))


_INSERT = insert(t)


def insert_many_with(conn: Connection, items: list[NotificationRecord]) -> None:
    """Insert inside the caller's transaction (a unit of ``Database.run``)."""
    if items:
        conn.execute(_INSERT, [_values(n) for n in items])


async def add(db: Database, n: NotificationRecord) -> None:
    async with db.write() as conn:
        await insert_with(conn, n)


async def get(db: Database, sid: str) -> NotificationRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.sid == sid))).mappings().first()
    return _record(row) if row else None


async def list_page(
    db: Database, account_sid: str, query: ListQuery, *, call_sid: str | None = None
) -> tuple[int, list[NotificationRecord]]:
    where: list[ColumnElement[bool]] = [t.c.account_sid == account_sid]
    if call_sid is not None:
        where.append(t.c.call_sid == call_sid)
    total, rows = await page_rows(db, t, where, query)
    return total, [_record(r) for r in rows]
