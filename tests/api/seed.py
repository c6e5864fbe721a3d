"""Builds the data behind the seed specification's four JSON examples (tests/data/api/seed_example_*.json)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from callplane.store.calls import CallRecord

DATA = Path(__file__).parent.parent / "data" / "api"


def example(n: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"seed_example_{n}.json").read_text())
    return loaded


def _iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def record_from_json(call: dict[str, Any]) -> CallRecord:
    """The stored record that the API must render back as exactly ``call``."""
    return CallRecord(
        sid=call["sid"],
        instance_id=call.get("InstanceId", ""),
        account_sid=call["account_sid"],
        date_created=parsedate_to_datetime(call["date_created"]),
        date_updated=parsedate_to_datetime(call["date_updated"]),
        to=call["to"],
        from_=call["from"],
        status=call["status"],
        direction=call["direction"],
        parent_call_sid=call.get("parent_call_sid"),
        phone_number_sid=call.get("phone_number_sid"),
        start_time=_iso(call.get("start_time")),
        end_time=_iso(call.get("end_time")),
        duration=call.get("duration"),
        answered_by=call.get("answered_by"),
        api_version=call["api_version"],
        forwarded_from=call.get("forwarded_from"),
        caller_name=call.get("caller_name"),
    )


def filler(account_sid: str, sid: str, created: datetime, *, sender: str = "15550001111") -> CallRecord:
    return CallRecord(
        sid=sid,
        instance_id="",
        account_sid=account_sid,
        date_created=created,
        date_updated=created + timedelta(seconds=30),
        to="15559990000",
        from_=sender,
        status="completed",
        direction="outbound-api",
        start_time=created,
        end_time=created + timedelta(seconds=30),
        duration=30,
    )
