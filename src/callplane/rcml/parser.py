"""The hardened RCML parser: bytes from a user's web server to a :class:`Document`, or an :class:`RcmlError`.

The body is hostile until proven otherwise. Before any XML parsing it must be at most :data:`MAX_BYTES`; then
defusedxml's expat parser runs with DTDs, entity declarations and external references forbidden (so no billion
laughs, no XXE, no network), and a tree builder that refuses documents nested deeper than :data:`MAX_DEPTH` or with
more than :data:`MAX_ELEMENTS` elements. Every failure is a :class:`DocumentError` (12100), an unknown element a
:class:`SchemaError` (12200), an unusable Content-Type a :class:`ContentTypeError` (12300); nothing else escapes.

Like Restcomm (restcomm-behaviour.md §4.3), bare ``&`` characters are escaped before parsing, so
``<Redirect>next?a=1&b=2</Redirect>`` works. Character and entity references (``&amp;``, ``&#38;``) are kept.
"""

from __future__ import annotations

import codecs
import re
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from callplane.core.errors import RcmlError
from callplane.rcml.attrs import shorten
from callplane.rcml.build import build_document
from callplane.rcml.errors import DOCUMENT_PARSE, SAY_TEXT, ContentTypeError, DocumentError
from callplane.rcml.events import DocumentLoaded, FetchFailed
from callplane.rcml.verbs import Document, Notice, Play, Say

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "XML_TYPES",
    "document_for_response",
    "escape_bare_ampersands",
    "parse_document",
    "response_event",
]

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_ELEMENTS = 10_000
XML_TYPES = frozenset({"text/xml", "application/xml", "text/html"})
_REFERENCE = r"&(?!(?:[A-Za-z_:][A-Za-z0-9_.:-]*|#[0-9]+|#x[0-9A-Fa-f]+);)"
_BARE_AMPERSAND = re.compile(_REFERENCE.encode("ascii"))
_BARE_AMPERSAND_TEXT = re.compile(_REFERENCE)
# UTF-32 first: its little-endian mark begins with UTF-16's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def escape_bare_ampersands(data: bytes) -> bytes:
    """``data`` (in an ASCII-compatible encoding) with every ``&`` that starts no reference replaced by ``&amp;``."""
    return _BARE_AMPERSAND.sub(b"&amp;", data)


def _escaped(data: bytes) -> bytes | str:
    """The body with bare ``&`` escaped; a UTF-16/32 body (by its byte-order mark) is decoded to text first."""
    for mark, codec in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                raise DocumentError(f"not well-formed XML: {exc.reason} in {codec}") from exc
            return _BARE_AMPERSAND_TEXT.sub("&amp;", text)
    return escape_bare_ampersands(data)


class _LimitedTreeBuilder(TreeBuilder):
    """An ElementTree builder that stops the parse as soon as the document is too deep or too big."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.elements = 0

    def start(self, tag: str, attrs: dict[str, str], /) -> Element:
        self.depth += 1
        self.elements += 1
        if self.depth > MAX_DEPTH:
            raise DocumentError(f"the document is nested more than {MAX_DEPTH} elements deep")
        if self.elements > MAX_ELEMENTS:
            raise DocumentError(f"the document has more than {MAX_ELEMENTS} elements")
        return super().start(tag, attrs)

    def end(self, tag: str, /) -> Element:
        self.depth -= 1
        return super().end(tag)


def _parse_xml(data: bytes | str) -> Element:
    parser = DefusedXMLParser(target=_LimitedTreeBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root: Element = parser.close()
    except DocumentError:
        raise
    except DTDForbidden as exc:
        raise DocumentError("a document type declaration (DTD) is not allowed") from exc
    except EntitiesForbidden as exc:
        raise DocumentError("entity declarations are not allowed") from exc
    except ExternalReferenceForbidden as exc:
        raise DocumentError("external references are not allowed") from exc
    except ParseError as exc:
        raise DocumentError(f"not well-formed XML: {exc}") from exc
    except (DefusedXmlException, ValueError, LookupError, RecursionError) as exc:
        # An unknown encoding declaration raises LookupError; a bad one ValueError or UnicodeError.
        raise DocumentError(f"not well-formed XML: {shorten(str(exc))}") from exc
    return root


def parse_document(body: bytes | str, url: str) -> Document:
    """Parse an RCML document fetched from ``url`` (the base for relative URLs in its verbs)."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if len(data) > MAX_BYTES:
        raise DocumentError(f"the document is {len(data)} bytes; the limit is {MAX_BYTES}")
    if not data.strip():
        raise DocumentError("the document is empty")
    root = _parse_xml(_escaped(data))
    if root.tag != "Response":
        raise DocumentError(f"the root element is <{shorten(root.tag)}>, not <Response>")
    return build_document(root, url)


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    """The lower-case media type and the charset parameter of a Content-Type header."""
    if not content_type:
        return "", None
    media, _, rest = content_type.partition(";")
    charset = None
    for param in rest.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return media.strip().lower(), charset


def _decode(body: bytes, charset: str | None) -> str:
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    return body.decode(codec, errors="replace")


def document_for_response(body: bytes, content_type: str | None, url: str) -> Document:
    """The RCML a fetch returned, by Content-Type (§4.3).

    XML types are parsed as RCML; ``audio/*`` plays ``url`` itself; ``text/plain`` says the body; anything else,
    including a missing Content-Type, is a :class:`ContentTypeError` (12300).
    """
    media, charset = _media_type(content_type)
    if media in XML_TYPES or media.endswith("+xml"):
        return parse_document(body, url)
    if len(body) > MAX_BYTES:
        raise DocumentError(f"the document is {len(body)} bytes; the limit is {MAX_BYTES}")
    if media.startswith("audio/"):
        return Document(url, (Play(url),))
    if media == "text/plain":
        text = _decode(body, charset).strip()
        if not text:
            return Document(url, (), (Notice(SAY_TEXT, "the text/plain document is empty; nothing to say"),))
        return Document(url, (Say(text),))
    shown = f'"{shorten(content_type)}"' if content_type else "missing"
    raise ContentTypeError(f"{url} returned Content-Type {shown}; expected XML, audio/* or text/plain")


def response_event(ref: int, url: str, body: bytes, content_type: str | None) -> DocumentLoaded | FetchFailed:
    """The interpreter event for a successful HTTP response to Fetch ``ref``: the document, or the RcmlError as a
    failed fetch with its code (so the FallbackUrl is tried, then the call is hung up with a Notification)."""
    try:
        return DocumentLoaded(ref, document_for_response(body, content_type, url))
    except RcmlError as exc:
        return FetchFailed(ref, url, str(exc), exc.code or DOCUMENT_PARSE)
