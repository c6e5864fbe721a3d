"""After a crash: the ``completed`` status callback of every call the previous run was cut off from.

``callplane serve`` first ends the records its previous run left live (``store.calls.complete_stale``: the outcome a
hang-up would have given). The calls that had a status callback still have their target in ``call_callbacks``
(it is removed with a call's final write), so :func:`recover_callbacks` queues their ``completed`` event, with the
record's final status and duration, in the outbox, and removes the targets. Callbacks already in the outbox are
delivered by the worker as usual: nothing queued before the crash is lost.
"""

from __future__ import annotations

import logging
from datetime import datetime

from callplane.engine.callstate import is_live
from callplane.engine.params import CallFacts, status_params
from callplane.store import calls as store_calls
from callplane.store.db import Database
from callplane.store.outbox import enqueue, forget_targets, orphan_targets

__all__ = ["recover_callbacks"]

log = logging.getLogger("callplane.engine")


async def recover_callbacks(db: Database, instance_id: str, when: datetime) -> int:
    """Queue the missing ``completed`` callbacks; returns how many were queued."""
    queued = 0
    for target in await orphan_targets(db, instance_id):
        record = await store_calls.get(db, target.call_sid)
        async with db.write() as conn:
            if record is not None and not is_live(record.status) and "completed" in target.events:
                facts = CallFacts(
                    sid=record.sid,
                    instance_id=record.instance_id,
                    account_sid=record.account_sid,
                    from_=record.from_,
                    to=record.to,
                    direction=record.direction,
                    created=record.date_created,
                    caller_name=record.caller_name,
                    forwarded_from=record.forwarded_from,
                    parent_call_sid=record.parent_call_sid,
                )
                ended = record.end_time or when
                params = status_params(
                    facts, "completed", ended, duration=record.duration or 0, api_version=target.api_version
                )
                await enqueue(
                    conn,
                    instance_id=instance_id,
                    call_sid=record.sid,
                    account_sid=record.account_sid,
                    url=target.url,
                    method=target.method,
                    params=params,
                    now=when.timestamp(),
                )
                queued += 1
            await conn.run_sync(forget_targets, [target.call_sid])
    if queued:
        log.info("queued the completed callback of %d calls cut off by the previous run", queued)
    return queued
