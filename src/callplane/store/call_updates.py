"""Conditional writes of live call records: the engine and live call modification never lose each other's updates.

Each write names the statuses it expects to find (``WHERE status IN (…)``) and reports whether it applied; a write
that finds the record already moved on (another writer ended the call first) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from callplane.store.schema import calls

__all__ = ["transition"]


async def transition(conn: AsyncConnection, sid: str, expect: Sequence[str], values: dict[str, Any]) -> bool:
    """Update ``sid`` with storage-form ``values`` if its status is one of ``expect``; True when it applied."""
    result = await conn.execute(
        update(calls).where(calls.c.sid == sid, calls.c.status.in_(list(expect))).values(**values)
    )
    return bool(result.rowcount == 1)
