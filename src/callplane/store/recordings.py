"""Recordings: one row per ``<Record>`` (or recorded Dial) with its duration and the file under DATA/recordings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.engine import RowMapping

from callplane.store.db import Database, from_us, to_us
from callplane.store.listing import ListQuery, page_rows
from callplane.store.schema import recordings as t

__all__ = ["RecordingRecord", "add", "get", "list_page", "remove"]


@dataclass(frozen=True, slots=True)
class RecordingRecord:
    sid: str
    account_sid: str
    call_sid: str
    date_created: datetime
    duration_ms: int
    file: str  # relative to the recordings directory
    api_version: str = "2012-04-24"


def _record(r: RowMapping) -> RecordingRecord:
    return RecordingRecord(
        sid=r["sid"],
        account_sid=r["account_sid"],
        call_sid=r["call_sid"],
        date_created=from_us(r["date_created"]),
        duration_ms=r["duration"],
        file=r["file"],
        api_version=r["api_version"],
    )


async def add(db: Database, rec: RecordingRecord) -> None:
    async with db.write() as conn:
        await conn.execute(
            insert(t).values(
                sid=rec.sid,
                account_sid=rec.account_sid,
                call_sid=rec.call_sid,
                date_created=to_us(rec.date_created),
                duration=rec.duration_ms,
                api_version=rec.api_version,
                file=rec.file,
            )
        )


async def get(db: Database, sid: str) -> RecordingRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.sid == sid))).mappings().first()
    return _record(row) if row else None


async def remove(db: Database, sid: str) -> bool:
    async with db.write() as conn:
        result = await conn.execute(delete(t).where(t.c.sid == sid))
    return bool(result.rowcount)


async def list_page(
    db: Database, account_sid: str, query: ListQuery, *, call_sid: str | None = None
) -> tuple[int, list[RecordingRecord]]:
    where: list[ColumnElement[bool]] = [t.c.account_sid == account_sid]
    if call_sid is not None:
        where.append(t.c.call_sid == call_sid)
    total, rows = await page_rows(db, t, where, query)
    return total, [_record(r) for r in rows]
