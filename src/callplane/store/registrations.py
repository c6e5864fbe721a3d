"""SIP registrar bindings (RFC 3261 §10), persisted so they survive restarts and are shared by every node.

The registrar itself is sans-IO (``callplane.sip.registrar``); the engine keeps its bindings in memory and writes
every change through these functions. Times are wall-clock epoch seconds in the API, microseconds in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Delete, and_, delete, or_, select

from callplane.store.db import Database
from callplane.store.schema import registrations


@dataclass(frozen=True, slots=True)
class BindingRow:
    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    source: str = ""  # "host:port" the REGISTER came from
    transport: str = "UDP"
    user_agent: str = ""
    instance_id: str = ""  # the node that accepted the registration
    account_sid: str = ""  # the account of the registering Client ("" for Clients configured outside any account)


def _us(seconds: float) -> int:
    return int(round(seconds * 1_000_000))


def _row(r: BindingRow) -> dict[str, object]:
    return {
        "aor": r.aor,
        "contact": r.contact,
        "expires_at": _us(r.expires_at),
        "call_id": r.call_id,
        "cseq": r.cseq,
        "source": r.source,
        "transport": r.transport,
        "user_agent": r.user_agent,
        "instance_id": r.instance_id,
        "account_sid": r.account_sid,
    }


def _binding(m: object) -> BindingRow:
    row = dict(m)  # type: ignore[call-overload]
    row["expires_at"] = row["expires_at"] / 1_000_000
    return BindingRow(**row)


async def apply(db: Database, aor: str, upserts: Sequence[BindingRow], removals: Sequence[str]) -> None:
    """Insert or replace ``upserts`` (keyed by aor + contact) and delete ``removals``, in one transaction.

    Each binding is one ``INSERT … ON CONFLICT DO UPDATE``, so two nodes writing the same binding at once (a phone
    that re-sent its REGISTER through another node) both succeed and the last write wins, instead of the second
    failing on the primary key."""
    async with db.write() as conn:
        if removals:
            await conn.execute(
                delete(registrations).where(
                    and_(registrations.c.aor == aor, registrations.c.contact.in_(list(removals)))
                )
            )
        for upsert in upserts:
            stmt = db.insert(registrations).values(**_row(upsert))
            changed = {k: v for k, v in _row(upsert).items() if k not in ("aor", "contact")}
            await conn.execute(stmt.on_conflict_do_update(index_elements=["aor", "contact"], set_=changed))


async def lookup(db: Database, aor: str, now: float, *, account_sid: str | None = None) -> list[BindingRow]:
    """Unexpired bindings of ``aor``, the longest-lived last; only ``account_sid``'s when it is given."""
    stmt = (
        select(registrations)
        .where(registrations.c.aor == aor, registrations.c.expires_at > _us(now))
        .order_by(registrations.c.expires_at, registrations.c.contact)
    )
    if account_sid is not None:
        stmt = stmt.where(registrations.c.account_sid == account_sid)
    async with db.read() as conn:
        return [_binding(m) for m in (await conn.execute(stmt)).mappings()]


async def load_all(db: Database, now: float) -> list[BindingRow]:
    stmt = select(registrations).where(registrations.c.expires_at > _us(now)).order_by(registrations.c.aor)
    async with db.read() as conn:
        return [_binding(m) for m in (await conn.execute(stmt)).mappings()]


async def purge(db: Database, now: float) -> int:
    async with db.write() as conn:
        result = await conn.execute(delete(registrations).where(registrations.c.expires_at <= _us(now)))
    return int(result.rowcount)


def _login_aors(login: str, schemes: tuple[str, ...] = ("sip", "sips")) -> ColumnElement[bool]:
    """The AORs ``scheme:login@any-domain`` (the registrar stores ``sip:user@host``, ``sips:`` for a sips To):
    an index range per scheme, ``@`` and the character after it bounding the user part exactly."""
    ranges = []
    for scheme in schemes:
        prefix = f"{scheme}:{login}@"
        ranges.append(and_(registrations.c.aor >= prefix, registrations.c.aor < prefix[:-1] + chr(ord("@") + 1)))
    return or_(*ranges)


async def lookup_login(db: Database, login: str, now: float, *, account_sid: str) -> list[BindingRow]:
    """Unexpired bindings of ``account_sid``'s Client ``login`` in any domain (``client:alice`` rings every one),
    oldest first."""
    stmt = (
        select(registrations)
        .where(
            _login_aors(login, ("sip",)),
            registrations.c.expires_at > _us(now),
            registrations.c.account_sid == account_sid,
        )
        .order_by(registrations.c.expires_at, registrations.c.contact)
    )
    async with db.read() as conn:
        return [_binding(m) for m in (await conn.execute(stmt)).mappings()]


def remove_login(login: str, *, account_sid: str) -> Delete:
    """The statement that drops every binding of ``account_sid``'s Client ``login`` (any domain, sip or sips),
    for the caller to run in the transaction that deletes or disables the Client."""
    return delete(registrations).where(_login_aors(login), registrations.c.account_sid == account_sid)
