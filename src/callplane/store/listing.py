"""One listing shape for the secondary resources (Notifications, Recordings, IncomingPhoneNumbers): keyset or page.

Every list is scoped (account, and optionally call) and ordered by one composite key in one direction, by default
``date_created DESC, sid DESC``, which the ``(account_sid, date_created, sid)`` index of each table serves (another
order names its own index's columns). ``total`` counts at most ``limit`` matches, as for Calls, so a listing is
bounded work whatever the table size.

:func:`prefix_range` and :func:`like` are the pattern filters' building blocks, with the same case-sensitive answers
on SQLite and PostgreSQL (the columns they filter are ``bytewise_string``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, literal, select, tuple_
from sqlalchemy.engine import RowMapping

from callplane.core.errors import NotFound
from callplane.store.db import Database

__all__ = ["ListQuery", "UnknownCursor", "like", "page_rows", "prefix_range"]


class UnknownCursor(NotFound):
    """``AfterSid`` names no row of this listing."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int = 0
    page_size: int = 50
    limit: int = 10_000
    after_sid: str | None = None


def prefix_range(column: Any, prefix: str) -> ColumnElement[bool] | None:
    """``column`` starts with ``prefix``, as a range an index scans; None when no range can be formed."""
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return None
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


def like(dialect: str, column: Any, pattern: str) -> ColumnElement[bool]:
    """``column LIKE pattern``, case-sensitive on every backend: ``%`` (any run) and ``_`` (one character) are the
    only special characters; everything else, a backslash included, matches itself."""
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; GLOB does not. Translate: % -> *, _ -> ?, and GLOB's own specials
        # (*, ?, [) become one-character classes that match themselves.
        table = {"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}
        return column.op("GLOB")("".join(table.get(c, c) for c in pattern))  # type: ignore[no-any-return]
    # PostgreSQL's LIKE treats a backslash as its escape character: double it so it matches itself.
    return column.like(pattern.replace("\\", "\\\\"), escape="\\")  # type: ignore[no-any-return]


async def page_rows(
    db: Database,
    table: Table,
    where: list[ColumnElement[bool]],
    query: ListQuery,
    *,
    order: Sequence[Any] | None = None,
    descending: bool = True,
) -> tuple[int, list[RowMapping]]:
    """The capped total and one page of rows in ``order`` (default ``date_created, sid``), newest first unless
    ``descending`` is False. The last column of ``order`` must be unique, so ``AfterSid`` is an exact position."""
    order = order or (table.c.date_created, table.c.sid)
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
            keys, values = tuple_(*order), tuple_(*(literal(v) for v in cursor))
            stmt = stmt.where(keys < values if descending else keys > values)
        else:
            stmt = stmt.offset(first)
        stmt = stmt.order_by(*(c.desc() if descending else c.asc() for c in order)).limit(wanted)
        rows = list((await conn.execute(stmt)).mappings().all())
    return total, rows
