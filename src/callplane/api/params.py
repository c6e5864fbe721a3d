"""Parsing of query/form values shared by the resources; every failure names the parameter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

from .errors import bad_request

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def url_param(fields: dict[str, str], name: str, *, required: bool = False) -> str | None:
    """An absolute http(s) URL field (``Url``, ``VoiceUrl``…); None when absent or blank (unless ``required``)."""
    value = fields.get(name, "").strip()
    if not value:
        if required:
            raise bad_request(f"{name} is required")
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    controls = any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)  # never valid in a URL; PostgreSQL refuses NUL
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or controls:
        raise bad_request(f"{name} must be an absolute http or https URL, got {value!r}")
    return value


def method_param(fields: dict[str, str], name: str) -> str:
    """A GET/POST field (``Method``, ``VoiceMethod``…), any case; POST when absent or blank."""
    value = fields.get(name, "").strip().upper() or "POST"
    if value not in ("GET", "POST"):
        raise bad_request(f"{name} must be GET or POST, got {fields[name]!r}")
    return value


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
