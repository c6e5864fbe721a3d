"""Account rows: create, read, update, and the parent/descendant relation used for authorization."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy import update as update_
from sqlalchemy.engine import RowMapping

from callplane.core.errors import NotFound
from callplane.store.db import Database, from_us, to_us
from callplane.store.schema import accounts, clients, incoming_phone_numbers, registrations

STATUSES = ("active", "suspended", "closed")


@dataclass(frozen=True, slots=True)
class AccountRecord:
    sid: str
    friendly_name: str
    status: str
    auth_token_hash: str
    date_created: datetime
    date_updated: datetime
    parent_sid: str | None = None
    email_address: str | None = None
    type: str = "Full"
    role: str = "Developer"


def _row(row: RowMapping) -> AccountRecord:
    return AccountRecord(
        sid=row["sid"],
        friendly_name=row["friendly_name"],
        status=row["status"],
        auth_token_hash=row["auth_token_hash"],
        date_created=from_us(row["date_created"]),
        date_updated=from_us(row["date_updated"]),
        parent_sid=row["parent_sid"],
        email_address=row["email_address"],
        type=row["type"],
        role=row["role"],
    )


def _values(record: AccountRecord) -> dict[str, Any]:
    return {
        "sid": record.sid,
        "parent_sid": record.parent_sid,
        "friendly_name": record.friendly_name,
        "email_address": record.email_address,
        "status": record.status,
        "type": record.type,
        "role": record.role,
        "auth_token_hash": record.auth_token_hash,
        "date_created": to_us(record.date_created),
        "date_updated": to_us(record.date_updated),
    }


async def create(db: Database, record: AccountRecord) -> AccountRecord:
    async with db.write() as conn:
        await conn.execute(insert(accounts).values(**_values(record)))
    return record


async def get(db: Database, sid: str) -> AccountRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.sid == sid))).mappings().first()
    return _row(row) if row else None


async def get_by_email(db: Database, email: str) -> AccountRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.email_address == email))).mappings().first()
    return _row(row) if row else None


_CHANGEABLE = ("friendly_name", "email_address", "status", "type", "role", "auth_token_hash", "date_updated")


async def update(db: Database, sid: str, changes: Mapping[str, Any]) -> AccountRecord:
    """Write only ``changes`` (AccountRecord field names) and return the account as stored afterwards.

    Two updates of one account at once (its parent renames it while it rotates its token) both take effect; a
    whole-record save would silently undo one of them."""
    values = dict(changes)
    for name in values:
        if name not in _CHANGEABLE:
            raise ValueError(f"{name!r} is not a changeable account field")
    if "date_updated" in values:
        values["date_updated"] = to_us(values["date_updated"])
    async with db.write() as conn:
        stmt = update_(accounts).where(accounts.c.sid == sid).values(**values).returning(*accounts.c)
        row = (await conn.execute(stmt)).mappings().first()
    if row is None:
        raise NotFound(f"account {sid} not found")
    return _row(row)


# What a status change of an account does to its sub-accounts: which of their statuses it overrides.
_CASCADE = {"closed": ("active", "suspended"), "suspended": ("active",), "active": ("suspended",)}


async def cascade_status(db: Database, sid: str, status: str, when: datetime) -> int:
    """Give ``sid``'s whole subtree the parent's new status, as Restcomm did for closing.

    Closing closes every sub-account; suspending suspends the active ones; reactivating reactivates the suspended
    ones. A closed account is never reopened by its parent. Returns how many sub-accounts changed."""
    below = [a.sid for a in await descendants(db, sid)]
    if not below:
        return 0
    async with db.write() as conn:
        result = await conn.execute(
            update_(accounts)
            .where(accounts.c.sid.in_(below), accounts.c.status.in_(_CASCADE[status]))
            .values(status=status, date_updated=to_us(when))
        )
    return int(result.rowcount)


async def release(db: Database, sids: Sequence[str]) -> tuple[int, int]:
    """Delete the IncomingPhoneNumbers and Clients (with their registrations) of the closed accounts ``sids``, in
    one transaction, as Restcomm's close did: the numbers can be taken by another account, the Clients' phones no
    longer register or ring. Returns how many numbers and Clients went."""
    if not sids:
        return 0, 0
    async with db.write() as conn:
        gone = await conn.execute(delete(incoming_phone_numbers).where(incoming_phone_numbers.c.account_sid.in_(sids)))
        left = await conn.execute(delete(clients).where(clients.c.account_sid.in_(sids)))
        await conn.execute(delete(registrations).where(registrations.c.account_sid.in_(sids)))
    return int(gone.rowcount), int(left.rowcount)


async def children(db: Database, sid: str) -> list[AccountRecord]:
    async with db.read() as conn:
        rows = (await conn.execute(select(accounts).where(accounts.c.parent_sid == sid))).mappings().all()
    return [_row(r) for r in rows]


async def descendants(db: Database, sid: str) -> list[AccountRecord]:
    """Every account below ``sid``, breadth first (hierarchies are shallow)."""
    found: list[AccountRecord] = []
    frontier = [sid]
    while frontier:
        async with db.read() as conn:
            rows = (await conn.execute(select(accounts).where(accounts.c.parent_sid.in_(frontier)))).mappings().all()
        level = [_row(r) for r in rows]
        found.extend(level)
        frontier = [a.sid for a in level]
    return found


async def ancestors(db: Database, sid: str) -> list[str]:
    """Sids above ``sid``, nearest first."""
    chain: list[str] = []
    current = await get(db, sid)
    while current is not None and current.parent_sid is not None and current.parent_sid not in chain:
        chain.append(current.parent_sid)
        current = await get(db, current.parent_sid)
    return chain
