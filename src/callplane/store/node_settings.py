"""Small node-wide values kept in the database (the administrator's sid, the SIP nonce secret)."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from callplane.store.db import Database
from callplane.store.schema import settings_kv


async def get_setting(db: Database, key: str) -> str | None:
    async with db.read() as conn:
        return (await conn.execute(select(settings_kv.c.value).where(settings_kv.c.key == key))).scalar()


async def put_setting(db: Database, key: str, value: str) -> None:
    async with db.write() as conn:
        done = await conn.execute(update(settings_kv).where(settings_kv.c.key == key).values(value=value))
        if done.rowcount == 0:
            await conn.execute(insert(settings_kv).values(key=key, value=value))
