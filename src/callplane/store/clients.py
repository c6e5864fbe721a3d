"""SIP Clients (restcomm-behaviour §6): who may register and be dialled as ``client:login``.

Only the RFC 7616 HA1 digests of the password are kept (``MD5(login:realm:password)`` and the SHA-256 form), for the
realm the node had when the password was set; the password itself is never stored or returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import RowMapping

from callplane.store.db import Database, from_us, to_us
from callplane.store.schema import clients as t

__all__ = ["ClientRecord", "add", "by_login", "get"]


@dataclass(frozen=True, slots=True)
class ClientRecord:
    sid: str
    account_sid: str
    date_created: datetime
    date_updated: datetime
    friendly_name: str
    login: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    status: int = 1  # 1 enabled, 0 disabled
    voice_url: str | None = None
    voice_method: str = "POST"
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    voice_application_sid: str | None = None
    api_version: str = "2012-04-24"

    @property
    def enabled(self) -> bool:
        return self.status == 1


def _record(r: RowMapping) -> ClientRecord:
    row = dict(r)
    row["date_created"] = from_us(row["date_created"])
    row["date_updated"] = from_us(row["date_updated"])
    return ClientRecord(**row)


def _values(rec: ClientRecord) -> dict[str, object]:
    values = {name: getattr(rec, name) for name in ClientRecord.__slots__}
    values["date_created"] = to_us(rec.date_created)
    values["date_updated"] = to_us(rec.date_updated)
    return values


async def add(db: Database, rec: ClientRecord) -> None:
    """Insert ``rec``; a login already taken raises Conflict."""
    async with db.write() as conn:
        await conn.execute(insert(t).values(**_values(rec)))


async def get(db: Database, sid: str) -> ClientRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.sid == sid))).mappings().first()
    return _record(row) if row is not None else None


async def by_login(db: Database, login: str) -> ClientRecord | None:
    """The Client with ``login`` (logins are unique on the cluster), enabled or not."""
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.login == login))).mappings().first()
    return _record(row) if row is not None else None
