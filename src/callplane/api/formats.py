"""Restcomm wire conventions: date formats, JSON/XML selection and XML building."""

from __future__ import annotations

import re
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

import orjson

from callplane.core.timefmt import iso8601, rfc2822

API_VERSION = "2012-04-24"
# Characters XML 1.0 forbids even as references (§2.2): C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

__all__ = ["API_VERSION", "dumps", "iso8601", "rfc2822", "xml_attrs", "xml_document", "xml_element", "xml_fields"]


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


def xml_fields(pairs: Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    """JSON field names (``call_sid``) as XML element names (``CallSid``), values unchanged."""
    return [("".join(part.capitalize() for part in name.split("_")), value) for name, value in pairs]


def xml_attrs(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f" {k}={quoteattr(xml_text(v))}" for k, v in pairs)


def xml_document(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<RestcommResponse>{body}</RestcommResponse>'.encode()
