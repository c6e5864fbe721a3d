"""Small node-wide values kept in the database (the administrator's sid, the SIP nonce secret).

Writes are single statements (``INSERT … ON CONFLICT``), so nodes sharing a database never race between a read
and a write.
"""

from __future__ import annotations

from sqlalchemy import select

from callplane.store.db import Database
from callplane.store.schema import settings_kv


async def get_setting(db: Database, key: str) -> str | None:
    async with db.read() as conn:
        return (await conn.execute(select(settings_kv.c.value).where(settings_kv.c.key == key))).scalar()


async def put_setting(db: Database, key: str, value: str) -> None:
    """Set ``key`` to ``value``, replacing what is there."""
    stmt = db.insert(settings_kv).values(key=key, value=value)
    async with db.write() as conn:
        await conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value}))


async def setdefault_setting(db: Database, key: str, value: str) -> str:
    """Store ``value`` unless ``key`` already has one, and return the value that is stored.

    Two nodes starting together each propose their own value; both get back the one that was written first."""
    stmt = db.insert(settings_kv).values(key=key, value=value).on_conflict_do_nothing(index_elements=["key"])
    async with db.write() as conn:
        await conn.execute(stmt)
        stored = (await conn.execute(select(settings_kv.c.value).where(settings_kv.c.key == key))).scalar_one()
    return str(stored)
