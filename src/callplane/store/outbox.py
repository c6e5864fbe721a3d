"""The status-callback outbox: rows written with the call-state change that caused them, drained in id order.

``enqueue`` takes the caller's connection, so the engine writes a callback in the *same transaction* as the call
record it reports: a crash can lose neither without the other. The delivery worker (``webhooks.outbox``) reads only
the heads (per call, the lowest pending id) of its own node's rows, so each call's callbacks leave in order and a
restarted node resumes where it stopped. Delivered or abandoned rows are deleted: the Notification written for a
failure is the lasting record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Integer, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from callplane.store.db import Database
from callplane.store.schema import call_callbacks as targets
from callplane.store.schema import webhook_outbox as t

__all__ = [
    "CallbackTarget",
    "NewCallback",
    "OutboxRow",
    "TableOutbox",
    "enqueue",
    "enqueue_many",
    "forget_targets",
    "orphan_targets",
    "remove_many",
    "reschedule_many",
    "save_targets",
]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    call_sid: str
    account_sid: str
    url: str
    method: str
    params: tuple[tuple[str, str], ...]
    attempts: int


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


@dataclass(frozen=True, slots=True)
class NewCallback:
    call_sid: str
    account_sid: str
    url: str
    method: str
    params: Sequence[tuple[str, str]]


_INSERT = insert(t)
_REMOVE = delete(t).where(t.c.id == bindparam("b_id"))
_RESCHEDULE = (
    update(t).where(t.c.id == bindparam("b_id")).values(attempts=bindparam("b_attempts"), next_at=bindparam("b_at"))
)
_SAVE_TARGET = insert(targets)
_FORGET_TARGET = delete(targets).where(targets.c.call_sid == bindparam("b_sid"))


def enqueue_many(conn: Connection, instance_id: str, items: Sequence[NewCallback], now: float) -> None:
    """Queue callbacks inside the caller's transaction (a unit of ``Database.run``), in the given order."""
    if items:
        conn.execute(
            _INSERT,
            [
                {
                    "instance_id": instance_id,
                    "call_sid": i.call_sid,
                    "account_sid": i.account_sid,
                    "url": i.url,
                    "method": i.method,
                    "params": orjson.dumps([list(p) for p in i.params]).decode(),
                    "attempts": 0,
                    "next_at": _us(now),
                    "date_created": _us(now),
                }
                for i in items
            ],
        )


def remove_many(conn: Connection, ids: Sequence[int]) -> None:
    """Delivered or abandoned callbacks leave the outbox."""
    if ids:
        conn.execute(_REMOVE, [{"b_id": i} for i in ids])


def reschedule_many(conn: Connection, retries: Sequence[tuple[int, int, float]]) -> None:
    """``(id, attempts, next_at)`` for callbacks to try again later."""
    if retries:
        conn.execute(_RESCHEDULE, [{"b_id": i, "b_attempts": attempts, "b_at": _us(at)} for i, attempts, at in retries])


def forget_targets(conn: Connection, call_sids: Sequence[str]) -> None:
    if call_sids:
        conn.execute(_FORGET_TARGET, [{"b_sid": sid} for sid in call_sids])


def save_targets(conn: Connection, instance_id: str, items: Sequence[CallbackTarget]) -> None:
    """Keep where each new call's callbacks go, inside the caller's transaction."""
    if items:
        conn.execute(
            _SAVE_TARGET,
            [
                {
                    "call_sid": target.call_sid,
                    "instance_id": instance_id,
                    "account_sid": target.account_sid,
                    "url": target.url,
                    "method": target.method,
                    "events": ",".join(target.events),
                    "api_version": target.api_version,
                }
                for target in items
            ],
        )


async def enqueue(
    conn: AsyncConnection,
    *,
    instance_id: str,
    call_sid: str,
    account_sid: str,
    url: str,
    method: str,
    params: Sequence[tuple[str, str]],
    now: float,
) -> None:
    """Queue one callback inside the caller's transaction (``now``: wall-clock epoch seconds)."""
    await conn.run_sync(enqueue_many, instance_id, [NewCallback(call_sid, account_sid, url, method, params)], now)


# The heads: per call of this node, its lowest pending id. Built once (they run on every delivery pass).
_HEADS = select(t).where(
    t.c.id.in_(
        select(func.min(t.c.id)).where(t.c.instance_id == bindparam("b_node")).group_by(t.c.call_sid).scalar_subquery()
    )
)
_ORDER = (t.c.next_at, t.c.id)
_LIMIT = bindparam("b_limit", type_=Integer)
_DUE = _HEADS.where(t.c.next_at <= bindparam("b_now")).order_by(*_ORDER).limit(_LIMIT)
_DUE_EXCEPT = (
    _HEADS.where(t.c.next_at <= bindparam("b_now"), t.c.call_sid.not_in(bindparam("b_busy", expanding=True)))
    .order_by(*_ORDER)
    .limit(_LIMIT)
)
_NEXT_DUE = select(func.min(_HEADS.subquery().c.next_at))


class TableOutbox:
    """The database side of ``webhooks.outbox.OutboxStore`` for one node (rows of other nodes are theirs)."""

    def __init__(self, db: Database, instance_id: str) -> None:
        self.db = db
        self.instance_id = instance_id

    async def due(self, now: float, limit: int, exclude: frozenset[str]) -> list[OutboxRow]:
        params: dict[str, Any] = {"b_node": self.instance_id, "b_now": _us(now), "b_limit": limit}
        if exclude:
            params["b_busy"] = sorted(exclude)
        stmt = _DUE_EXCEPT if exclude else _DUE
        rows = await self.db.run(lambda conn: conn.execute(stmt, params).mappings().all())
        return [
            OutboxRow(
                id=r["id"],
                call_sid=r["call_sid"],
                account_sid=r["account_sid"],
                url=r["url"],
                method=r["method"],
                params=tuple((str(k), str(v)) for k, v in orjson.loads(r["params"])),
                attempts=r["attempts"],
            )
            for r in rows
        ]

    async def next_due(self) -> float | None:
        params = {"b_node": self.instance_id}
        value = await self.db.run(lambda conn: conn.execute(_NEXT_DUE, params).scalar_one_or_none())
        return None if value is None else value / 1_000_000

    async def pending(self, call_sid: str | None = None) -> int:
        stmt = select(func.count()).select_from(t).where(t.c.instance_id == self.instance_id)
        if call_sid is not None:
            stmt = stmt.where(t.c.call_sid == call_sid)
        async with self.db.read() as conn:
            return int((await conn.execute(stmt)).scalar_one())


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Where a live call's status callbacks go (kept until its final record is written)."""

    call_sid: str
    account_sid: str
    url: str
    method: str
    events: tuple[str, ...]
    api_version: str = "2012-04-24"


def update_target(conn: Connection, call_sid: str, url: str, method: str) -> None:
    conn.execute(update(targets).where(targets.c.call_sid == call_sid).values(url=url, method=method))


async def orphan_targets(db: Database, instance_id: str) -> list[CallbackTarget]:
    """The targets this node's previous run left behind: calls it was running when it stopped."""
    async with db.read() as conn:
        rows = (await conn.execute(select(targets).where(targets.c.instance_id == instance_id))).mappings().all()
    return [
        CallbackTarget(
            r["call_sid"],
            r["account_sid"],
            r["url"],
            r["method"],
            tuple(filter(None, r["events"].split(","))),
            r["api_version"],
        )
        for r in rows
    ]


async def adopt_callbacks(db: Database, from_instances: Sequence[str], to_instance: str) -> None:
    """Hand other instances' queued callbacks and callback targets to this one (workers that no longer run)."""
    async with db.write() as conn:
        for table in (t, targets):
            moved = update(table).where(table.c.instance_id.in_(from_instances)).values(instance_id=to_instance)
            await conn.execute(moved)
