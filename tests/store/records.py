"""A call record to write in store tests."""

from __future__ import annotations

from datetime import datetime

from callplane.core.ids import IdSource
from callplane.store.calls import CallRecord
from tests.api.conftest import ADMIN_SID

INSTANCE = "ID" + "1" * 32


def live_call(n: int, status: str, created: datetime, started: datetime | None = None) -> CallRecord:
    """Call number ``n`` of node INSTANCE, in the administrator's account, in ``status``."""
    return CallRecord(
        sid=IdSource(n).call_sid(INSTANCE),
        instance_id=INSTANCE,
        account_sid=ADMIN_SID,
        date_created=created,
        date_updated=created,
        to="client:bob",
        from_="+15551230000",
        status=status,
        direction="inbound",
        start_time=started,
    )
