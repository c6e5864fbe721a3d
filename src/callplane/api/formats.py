"""Restcomm wire conventions: date formats, JSON/XML selection and XML building."""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

import orjson

from callplane.core.timefmt import iso8601, rfc2822

API_VERSION = "2012-04-24"

__all__ = ["API_VERSION", "dumps", "iso8601", "rfc2822", "xml_attrs", "xml_document", "xml_element"]


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def xml_element(name: str, value: object) -> str:
    """``<Name>value</Name>``; ``None`` gives an empty element; a list of pairs nests."""
    if value is None:
        return f"<{name}/>"
    if isinstance(value, list):
        return f"<{name}>{''.join(xml_element(k, v) for k, v in value)}</{name}>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def xml_attrs(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in pairs)


def xml_document(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<RestcommResponse>{body}</RestcommResponse>'.encode()
