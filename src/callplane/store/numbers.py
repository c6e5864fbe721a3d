"""IncomingPhoneNumbers (restcomm-behaviour §6): numbers the trunk delivers to this cluster, and what answers them.

``phone_number`` is stored in E.164 (``core.phone.to_e164``) and is unique on the cluster, so inbound routing is one
indexed lookup of the normalised Request-URI user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import RowMapping

from callplane.store.db import Database, from_us, to_us
from callplane.store.schema import incoming_phone_numbers as t

__all__ = ["NumberRecord", "add", "by_phone_number", "get"]


@dataclass(frozen=True, slots=True)
class NumberRecord:
    sid: str
    account_sid: str
    date_created: datetime
    date_updated: datetime
    friendly_name: str
    phone_number: str  # E.164
    voice_url: str | None = None
    voice_method: str = "POST"
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    voice_caller_id_lookup: bool = False
    voice_application_sid: str | None = None
    sms_url: str | None = None
    sms_method: str = "POST"
    sms_fallback_url: str | None = None
    sms_fallback_method: str = "POST"
    sms_application_sid: str | None = None
    ussd_url: str | None = None
    ussd_method: str = "POST"
    ussd_fallback_url: str | None = None
    ussd_fallback_method: str = "POST"
    ussd_application_sid: str | None = None
    refer_url: str | None = None
    refer_method: str = "POST"
    refer_application_sid: str | None = None
    voice_capable: bool = True
    sms_capable: bool = False
    mms_capable: bool = False
    fax_capable: bool = False
    api_version: str = "2012-04-24"


_FLAGS = ("voice_caller_id_lookup", "voice_capable", "sms_capable", "mms_capable", "fax_capable")


def _record(r: RowMapping) -> NumberRecord:
    row = dict(r)
    row["date_created"] = from_us(row["date_created"])
    row["date_updated"] = from_us(row["date_updated"])
    for flag in _FLAGS:
        row[flag] = bool(row[flag])
    return NumberRecord(**row)


def _values(rec: NumberRecord) -> dict[str, object]:
    values = {name: getattr(rec, name) for name in NumberRecord.__slots__}
    values["date_created"] = to_us(rec.date_created)
    values["date_updated"] = to_us(rec.date_updated)
    for flag in _FLAGS:
        values[flag] = int(values[flag])
    return values


async def add(db: Database, rec: NumberRecord) -> None:
    """Insert ``rec``; a number already provisioned raises Conflict."""
    async with db.write() as conn:
        await conn.execute(insert(t).values(**_values(rec)))


async def get(db: Database, sid: str) -> NumberRecord | None:
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.sid == sid))).mappings().first()
    return _record(row) if row is not None else None


async def by_phone_number(db: Database, e164: str) -> NumberRecord | None:
    """The number ``e164`` (already normalised), whichever account holds it."""
    async with db.read() as conn:
        row = (await conn.execute(select(t).where(t.c.phone_number == e164))).mappings().first()
    return _record(row) if row is not None else None
