"""One listing shape for the secondary resources (Notifications, Recordings): newest first, keyset or page.

Every list is scoped (account, and optionally call) and ordered ``date_created DESC, sid DESC``, which the
``(account_sid, date_created, sid)`` index of each table serves. ``total`` counts at most ``limit`` matches, as
for Calls, so a listing is bounded work whatever the table size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, func, literal, select, tuple_
from sqlalchemy.engine import RowMapping

from callplane.core.errors import NotFound
from callplane.store.db import Database

__all__ = ["ListQuery", "UnknownCursor", "page_rows"]


class UnknownCursor(NotFound):
    """``AfterSid`` names no row of this listing."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int = 0
    page_size: int = 50
    limit: int = 10_000
    after_sid: str | None = None


async def page_rows(
    db: Database, table: Table, where: list[ColumnElement[bool]], query: ListQuery
) -> tuple[int, list[RowMapping]]:
    """The capped total and one page of rows, newest first."""
    order = (table.c.date_created, table.c.sid)
    async with db.read() as conn:
        capped = select(literal(1)).select_from(table).where(*where).limit(query.limit).subquery()
        total = int((await conn.execute(select(func.count()).select_from(capped))).scalar_one())
        first = query.page * query.page_size
        wanted = min(query.page_size, total - first)
        if wanted <= 0:
            return total, []
        stmt: Any = select(table).where(*where)
        if query.after_sid is not None:
            cursor = (await conn.execute(select(*order).where(table.c.sid == query.after_sid, *where))).first()
            if cursor is None:
                raise UnknownCursor(f"AfterSid {query.after_sid} is not in this list")
            stmt = stmt.where(tuple_(*order) < tuple_(*(literal(v) for v in cursor)))
        else:
            stmt = stmt.offset(first)
        stmt = stmt.order_by(*(c.desc() for c in order)).limit(wanted)
        rows = list((await conn.execute(stmt)).mappings().all())
    return total, rows
