"""Parsing of query/form values shared by the list resources; every failure names the parameter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from .errors import bad_request

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def parse_instant(name: str, raw: str) -> tuple[datetime, bool]:
    """A date (``2020-04-07``) or ISO-8601 date-time. Returns (UTC instant, was_date_only). No zone means UTC."""
    m = _DATE_TIME.fullmatch(raw.strip())
    if not m:
        raise bad_request(f"{name} must be an ISO-8601 date (YYYY-MM-DD) or date-time, got {raw!r}")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        tz = UTC
        if zone and zone not in ("Z", "z"):
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            tz = timezone(sign * offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        value = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro, tzinfo=tz
        )
    except ValueError:
        raise bad_request(f"{name} is not a valid date or date-time: {raw!r}") from None
    return value.astimezone(UTC), hour is None
