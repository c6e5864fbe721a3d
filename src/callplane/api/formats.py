"""Restcomm wire conventions: date formats, JSON/XML selection and XML building."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

import orjson

API_VERSION = "2012-04-24"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Characters XML 1.0 forbids even as references (§2.2): C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
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


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def xml_text(value: object) -> str:
    """``str(value)`` with every character XML cannot carry replaced by U+FFFD, so the document always parses."""
    return _NOT_XML.sub("\ufffd", str(value))


def xml_element(name: str, value: object) -> str:
    """``<Name>value</Name>``; ``None`` gives an empty element; a list of pairs nests."""
    if value is None:
        return f"<{name}/>"
    if isinstance(value, list):
        return f"<{name}>{''.join(xml_element(k, v) for k, v in value)}</{name}>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(xml_text(value))}</{name}>"


def xml_attrs(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f" {k}={quoteattr(xml_text(v))}" for k, v in pairs)


def xml_document(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<RestcommResponse>{body}</RestcommResponse>'.encode()
