"""SIP Clients (restcomm-behaviour §6): who may register and be dialled as ``client:login``.

Only the RFC 7616 HA1 digests of the password are kept (``MD5(login:realm:password)`` and the SHA-256 form), for the
realm the node had when the password was set; the password itself is never stored or returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy import update as update_
from sqlalchemy.engine import RowMapping

from callplane.core.errors import Conflict, NotFound
from callplane.core.ids import IdSource
from callplane.core.secrets import digest_ha1
from callplane.store import registrations
from callplane.store.db import Database, first_with_status, from_us, to_us
from callplane.store.schema import accounts
from callplane.store.schema import clients as t

__all__ = [
    "ClientRecord",
    "add",
    "by_login",
    "get",
    "list_for",
    "new",
    "remove",
    "seed",
    "update",
    "with_account_status",
]


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


def new(sid: str, account_sid: str, login: str, password: str, *, realm: str, now: datetime) -> ClientRecord:
    """A fresh, enabled Client named after its login, its password kept only as the HA1s for ``realm``."""
    md5, sha256 = digest_ha1(login, realm, password)
    return ClientRecord(
        sid=sid,
        account_sid=account_sid,
        date_created=now,
        date_updated=now,
        friendly_name=login,
        login=login,
        realm=realm,
        ha1_md5=md5,
        ha1_sha256=sha256,
    )


def _record(r: RowMapping | Mapping[str, Any]) -> ClientRecord:
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


_BY_LOGIN = select(t).where(t.c.login == bindparam("login"))


async def by_login(db: Database, login: str) -> ClientRecord | None:
    """The Client with ``login`` (logins are unique on the cluster), enabled or not. One unit of work
    (``Database.run``): every inbound INVITE and REGISTER asks, so it takes the store's cheap path."""
    row = await db.run(lambda conn: conn.execute(_BY_LOGIN, {"login": login}).mappings().first())
    return _record(row) if row is not None else None


_FOR_LOGIN = (
    select(t, accounts.c.status.label("account_status"))
    .join(accounts, accounts.c.sid == t.c.account_sid)
    .where(t.c.login == bindparam("login"))
)


async def with_account_status(db: Database, login: str) -> tuple[ClientRecord, str] | None:
    """The Client with ``login`` and its account's status, in one query on the store's cheap path (a suspended or
    closed account's Clients neither register nor call)."""
    found = await first_with_status(db, _FOR_LOGIN, {"login": login})
    return None if found is None else (_record(found[0]), found[1])


async def list_for(db: Database, account_sid: str) -> list[ClientRecord]:
    """Every Client of ``account_sid``, oldest first (Restcomm's list has no paging)."""
    stmt = select(t).where(t.c.account_sid == account_sid).order_by(t.c.date_created, t.c.sid)
    async with db.read() as conn:
        return [_record(r) for r in (await conn.execute(stmt)).mappings()]


_CHANGEABLE = frozenset(ClientRecord.__slots__) - {"sid", "account_sid", "login", "date_created", "api_version"}


async def update(db: Database, sid: str, changes: Mapping[str, Any]) -> ClientRecord:
    """Write only ``changes`` (ClientRecord field names) and return the Client as stored afterwards.

    Disabling a Client (``status`` 0) drops its registrations in the same transaction, so ``client:login`` stops
    ringing at once."""
    values = dict(changes)
    unknown = set(values) - _CHANGEABLE
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not changeable Client fields")
    if "date_updated" in values:
        values["date_updated"] = to_us(values["date_updated"])
    async with db.write() as conn:
        stmt = update_(t).where(t.c.sid == sid).values(**values).returning(*t.c)
        row = (await conn.execute(stmt)).mappings().first()
        if row is None:
            raise NotFound(f"client {sid} not found")
        rec = _record(row)
        if not rec.enabled:
            await conn.execute(registrations.remove_login(rec.login, account_sid=rec.account_sid))
    return rec


async def remove(db: Database, sid: str) -> bool:
    """Delete the Client and its registrations in one transaction; False when there was none."""
    async with db.write() as conn:
        stmt = delete(t).where(t.c.sid == sid).returning(t.c.login, t.c.account_sid)
        row = (await conn.execute(stmt)).first()
        if row is None:
            return False
        await conn.execute(registrations.remove_login(row.login, account_sid=row.account_sid))
    return True


async def seed(
    db: Database, passwords: Mapping[str, str], *, account_sid: str, realm: str, ids: IdSource, now: datetime
) -> list[str]:
    """Create a Client of ``account_sid`` for each login of ``passwords`` that has none yet (development seeding);
    the logins created. Idempotent, and safe when several processes seed at once: a login taken meanwhile is
    skipped."""
    created = []
    for login, password in passwords.items():
        if await by_login(db, login) is not None:
            continue
        rec = new(ids.client_sid(), account_sid, login, password, realm=realm, now=now)
        try:
            await add(db, rec)
        except Conflict:
            continue
        created.append(login)
    return created
