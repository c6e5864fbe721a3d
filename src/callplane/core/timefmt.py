"""Restcomm's date forms, shared by the API representations and the webhook parameters."""

from __future__ import annotations

from datetime import datetime

__all__ = ["iso8601", "rfc2822"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc2822(value: datetime) -> str:
    """``Tue, 7 Apr 2020 11:10:15 +0000`` (Restcomm's date_created form: no leading zero on the day)."""
    return (
        f"{_DAYS[value.weekday()]}, {value.day} {_MONTHS[value.month - 1]} {value.year} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} +0000"
    )


def iso8601(value: datetime) -> str:
    """``2020-04-07T11:10:15.000Z`` (start_time / end_time, UTC, milliseconds)."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )
