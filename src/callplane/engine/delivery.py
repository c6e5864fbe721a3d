"""Status-callback delivery for this node: the store's outbox behind the webhooks worker, failures as Notifications."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from callplane.core.ids import IdSource
from callplane.engine.writer import RecordWriter, Write
from callplane.store.notifications import ERROR, WARNING, NotificationRecord
from callplane.store.outbox import TableOutbox
from callplane.webhooks.fetch import FetchError
from callplane.webhooks.outbox import Callback

__all__ = ["StoreOutbox", "failure_notification"]


class StoreOutbox:
    """``webhooks.outbox.OutboxStore`` over the ``webhook_outbox`` table (rows of this node only). Outcomes are
    written through the engine's :class:`RecordWriter`, batched with everything else."""

    def __init__(self, table: TableOutbox, writer: RecordWriter) -> None:
        self.table = table
        self.writer = writer

    async def due(self, now: float, limit: int, exclude: frozenset[str]) -> list[Callback]:
        rows = await self.table.due(now, limit, exclude)
        return [Callback(r.id, r.call_sid, r.url, r.method, r.params, r.attempts, r.account_sid) for r in rows]

    async def next_due(self) -> float | None:
        return await self.table.next_due()

    async def delivered(self, item: Callback) -> None:
        await self.writer.apply(Write(item.call_sid, item.account_sid, outbox_done=(item.id,)))

    async def retry(self, item: Callback, next_at: float, error: str) -> None:
        retry = ((item.id, item.attempts + 1, next_at),)
        await self.writer.apply(Write(item.call_sid, item.account_sid, outbox_retry=retry))

    async def give_up(self, item: Callback, error: str) -> None:
        await self.writer.apply(Write(item.call_sid, item.account_sid, outbox_done=(item.id,)))


def failure_notification(
    ids: IdSource,
    *,
    account_sid: str,
    call_sid: str | None,
    error: FetchError,
    method: str,
    params: tuple[tuple[str, str], ...] | list[tuple[str, str]],
    when: datetime,
    final: bool = True,
) -> NotificationRecord:
    """A Notification for a failed webhook exchange: the URL, the method, the HTTP status or error, what was sent."""
    return NotificationRecord(
        sid=ids.notification_sid(),
        account_sid=account_sid,
        call_sid=call_sid,
        date_created=when,
        log=ERROR if final else WARNING,
        error_code=error.code,
        message_text=str(error),
        request_url=error.url,
        request_method=method.upper(),
        request_variables=urlencode(list(params)),
        response_body=error.body[:2048].decode("utf-8", "replace"),
    )
