"""SIP messages: parse and serialise requests and responses, and frame them on streams (RFC 3261 §7, §18.3).

Theory of operation
-------------------
A message keeps its header *lines* as received, in order, in a :class:`Headers` store: unknown headers and the
spelling of names (including compact forms, §7.3.3) survive a round trip. Lookups use the canonical lower-case
long name (``"call-id"`` finds ``i:`` too). Typed values (:class:`~callplane.sip.headers.Via`, ``Address``,
``CSeq``) are parsed on first use and cached until a line of that header changes.

:func:`parse_message` parses one whole message (a datagram, or a frame cut by :class:`StreamFramer`). It checks
the start line, the mandatory headers (Via, From, To, Call-ID, CSeq, §8.1.1) and parses the top Via, From, To and
CSeq eagerly, so a message that comes out of it can be used without further parse errors on those fields.
Everything else (Contact, Route, the body) is lazy.

Errors are :class:`~callplane.sip.headers.SipParseError` (``ValueError`` + ``SipError``, ``status`` 400 or 513).
When the request line and the header block were readable, ``error.partial`` holds the partially parsed
:class:`Request` so that a transport can still build the 400 response (use :func:`can_answer`).

Public API::

    parse_message(data: bytes, *, stream: bool = False) -> Request | Response
    Request(method, uri, headers=None, body=b"")     .create_response(status, reason=None, to_tag=None)
                                                     .create_cancel()   (§9.1, for an INVITE we sent)
    Response(status, reason=None, headers=None, body=b"")
    bytes(msg)                                       serialise; Content-Length is always made to match the body
    msg.headers: Headers                              get / get_all / add / set / insert_first / set_first / remove
    msg.vias, msg.via, msg.from_, msg.to, msg.call_id, msg.cseq, msg.contacts, msg.max_forwards
    StreamFramer(max_size)                            feed(bytes) -> list[bytes] frames (TCP, §18.3)
    response_destination(via, source_host, source_port) -> (host, port)   §18.2.2 for unreliable transports
    stamp_via(request, host, port)                    §18.2.1 received / RFC 3581 rport
    error_response(error, host, port, to_tag)         the 400 (or 505, 416...) for a request that failed to parse
    decrement_max_forwards(request)                   raises TooManyHops (483) at zero (§16.3 / §8.2.2)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from callplane.sip.headers import TOKEN_CHARS, URI, Address, CSeq, SipParseError, Via, split_list

__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "SipParseError",
    "FramingError",
    "TooManyHops",
    "StreamFramer",
    "parse_message",
    "can_answer",
    "error_response",
    "stamp_via",
    "canonical_name",
    "response_destination",
    "decrement_max_forwards",
    "REASONS",
    "MAX_DATAGRAM",
    "DEFAULT_MAX_FORWARDS",
]

MAX_DATAGRAM = 65535
"""Largest UDP payload we accept; bigger inputs are dropped."""

DEFAULT_MAX_FORWARDS = 70
"""RFC 3261 §8.1.1.6."""

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1); others (Authorization, Date...) are not split.
_LIST_HEADERS = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "allow-events",
        "in-reply-to",
        "alert-info",
        "call-info",
        "error-info",
        "path",
        "service-route",
        "p-asserted-identity",
        "reason",
    }
)

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# Copied from a request into its responses after the Via lines, in this order (§8.2.6.2).
_COPIED = ("from", "to", "call-id", "cseq")
_COPIED_SET = frozenset(_COPIED)
_COPIED_VIEWS = ("via", "via:all", "from", "to", "call-id", "cseq")  # the parsed views a response shares

_MANDATORY = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
_MANDATORY_KEYS = frozenset(key for key, _ in _MANDATORY)


class FramingError(SipParseError):
    """A stream can no longer be framed (bad or missing Content-Length, oversized); close the connection."""


class TooManyHops(SipParseError):
    """Max-Forwards reached zero (RFC 3261 §16.3); answer 483."""

    def __init__(self) -> None:
        super().__init__("too many hops", 483)


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name: ``"i"`` and ``"Call-ID"`` -> ``"call-id"``."""
    key = _CANONICAL.get(name)
    if key is None:
        key = name.lower()
        key = _COMPACT.get(key, key)
        if len(_CANONICAL) < 1024:  # the stack's own names; bounded against names built from input
            _CANONICAL[name] = key
    return key


_CANONICAL: dict[str, str] = {}


_T = TypeVar("_T")
_MISSING: Any = object()


class Headers:
    """Ordered header lines ``(name, value)`` as written; lookups by canonical name (see :func:`canonical_name`)."""

    __slots__ = ("_lines", "_cache", "_views")

    def __init__(self, lines: Iterable[tuple[str, str]] = ()) -> None:
        self._lines: list[tuple[str, str, str]] = [(canonical_name(n), n, v) for n, v in lines] if lines else []
        self._cache: dict[str, Any] = {}
        # How many ``name:<view>`` entries the cache may hold: while none, a change forgets its header's views
        # without scanning the cache (a response being built gets a line added several times).
        self._views = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(name, value) for _, name, value in self._lines])

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(k == key for k, _, _ in self._lines)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._lines = list(self._lines)
        return new

    def first_values(self) -> dict[str, str]:
        """Canonical name -> its first line's value (cached; do not change the dict)."""
        first: dict[str, str] | None = self._cache.get("")
        if first is None:
            first = self._cache[""] = {k: v for k, _, v in reversed(self._lines)}  # the first line of a name wins
        return first

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line's value for ``name`` (not split on commas)."""
        first: dict[str, str] | None = self._cache.get("")
        if first is None:
            first = self.first_values()
        value = first.get(name)  # already canonical (the stack's own lookups): one probe
        if value is None:
            key = name.lower()
            value = first.get(_COMPACT.get(key, key))
        return default if value is None else value

    def get_all(self, name: str) -> list[str]:
        """Every value for ``name`` in order; list headers (Via, Route, Contact...) are split on top-level commas."""
        key = _CANONICAL.get(name) or canonical_name(name)
        first: dict[str, str] | None = self._cache.get("")
        if first is None:
            first = self.first_values()
        value = first.get(key)
        if value is None:
            return []  # the usual answer for Require, Record-Route, Route...: no scan of the lines
        if len(first) == len(self._lines):  # no name on two lines (the usual message): ``value`` is its only line
            return split_list(value) if key in _LIST_HEADERS else [value]
        values = [v for k, _, v in self._lines if k == key]
        if key in _LIST_HEADERS:
            if len(values) == 1:
                return split_list(values[0])  # the usual case: one line
            out: list[str] = []
            for v in values:
                out.extend(split_list(v))
            return out
        return values

    def add(self, name: str, value: object) -> None:
        """Append a line."""
        key = _CANONICAL.get(name) or canonical_name(name)
        text = value if type(value) is str else str(value)
        self._lines.append((key, name, text))
        cache = self._cache
        if cache and (key in cache or self._views or "" in cache):  # else no view of it to forget (a new response)
            self._changed(key, appended=text)

    def set(self, name: str, value: object) -> None:
        """Replace every line of ``name`` by one line (at the position of the first, else at the end)."""
        key = canonical_name(name)
        new = (key, name, str(value))
        out: list[tuple[str, str, str]] = []
        done = False
        for line in self._lines:
            if line[0] == key:
                if not done:
                    out.append(new)
                    done = True
            else:
                out.append(line)
        if not done:
            out.append(new)
        self._lines = out
        self._changed(key)

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._lines = [line for line in self._lines if line[0] != key]
        self._changed(key)

    def insert_first(self, name: str, value: object) -> None:
        """Put a value on top of ``name``'s values (a new Via, §8.1.1.7); at the very top if ``name`` is absent."""
        key = canonical_name(name)
        for i, line in enumerate(self._lines):
            if line[0] == key:
                self._lines.insert(i, (key, name, str(value)))
                break
        else:
            self._lines.insert(0, (key, name, str(value)))
        self._changed(key)

    def set_first(self, name: str, value: object) -> None:
        """Replace the first value of ``name`` only, splitting a comma-joined line if needed (e.g. the top Via).

        Only the views of ``name`` are invalidated; a typed value (a :class:`Via` for the top Via) replaces the cached
        view of the same type, so stamping ``received`` on a request costs no re-parse."""
        key = canonical_name(name)
        text = str(value)
        for i, (k, n, v) in enumerate(self._lines):
            if k == key:
                parts = split_list(v) if key in _LIST_HEADERS else [v]
                new = [(k, n, text)]
                if len(parts) > 1:
                    new.append((k, n, ", ".join(parts[1:])))
                self._lines[i : i + 1] = new
                break
        else:
            self._lines.append((key, name, text))
        cache = self._cache
        old = cache.get(key)
        first = cache.get("")
        self._changed(key)
        if first is not None:
            first[key] = text
            cache[""] = first
        if old is not None and type(old) is type(value):
            cache[key] = value

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (a proxy removing its Via, §16.7)."""
        key = canonical_name(name)
        for i, (k, n, v) in enumerate(self._lines):
            if k == key:
                parts = split_list(v) if key in _LIST_HEADERS else [v]
                rest = [(k, n, ", ".join(parts[1:]))] if len(parts) > 1 else []
                self._lines[i : i + 1] = rest
                self._changed(key)
                return parts[0] if parts else None
        return None

    def _changed(self, key: str, *, appended: str | None = None) -> None:
        """Forget the views of header ``key``: the first-value map, ``key`` itself and ``key:<view>``. A line
        ``appended`` at the end changes the first-value map only when it is the first line of ``key``."""
        cache = self._cache
        if not cache:
            return
        cache.pop(key, None)
        if self._views:
            prefix = key + ":"
            for name in [name for name in cache if name.startswith(prefix)]:
                del cache[name]
                self._views -= 1
        first = cache.get("")
        if first is not None:
            if appended is None:
                del cache[""]
            elif key not in first:
                first[key] = appended

    def typed(self, key: str, parse: Callable[[Headers], _T]) -> _T:
        """Cache a typed view of this store under ``key`` until that header changes. ``key`` is the canonical header
        name (the view of its first value) or ``name:<view>`` (another view of the same header)."""
        cache = self._cache
        value = cache.get(key, _MISSING)  # not try/except: a miss is the usual case on a new message, and costly
        if value is _MISSING:
            value = cache[key] = parse(self)
            if ":" in key:
                self._views += 1
        return value  # type: ignore[no-any-return]  # not typing.cast: a call per view, dozens per message


def _required(headers: Headers, key: str, label: str) -> str:
    value = headers.get(key)
    if value is None:
        raise SipParseError(f"missing mandatory header {label}")
    return value


def _vias(h: Headers) -> list[Via]:
    return [Via.parse(v) for v in h.get_all("via")]


def _top_via(h: Headers) -> Via:
    values = h.get("via")
    if values is None:
        raise SipParseError("missing mandatory header Via")
    first = split_list(values)
    if not first:
        raise SipParseError("malformed Via")
    return Via.parse(first[0])


def _from(h: Headers) -> Address:
    return Address.parse(_required(h, "from", "From"))


def _to(h: Headers) -> Address:
    return Address.parse(_required(h, "to", "To"))


def _call_id(h: Headers) -> str:
    return _required(h, "call-id", "Call-ID").strip()


def _cseq(h: Headers) -> CSeq:
    return CSeq.parse(_required(h, "cseq", "CSeq"))


def _max_forwards(h: Headers) -> int | None:
    return _max_forwards_of(h.get("max-forwards"))


def _max_forwards_of(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 3:
        raise SipParseError("malformed Max-Forwards")
    return int(value)


def _contacts(h: Headers) -> list[Address]:
    return [Address.parse(v) for v in h.get_all("contact") if v != "*"]


class Message:
    """Common part of :class:`Request` and :class:`Response`."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """Serialise; the Content-Length line (added if missing) always states ``len(body)`` (§20.14)."""
        out = [self.start_line()]
        length = str(len(self.body))
        have_length = False
        for key, name, value in self.headers._lines:
            if key == "content-length":
                if have_length:
                    continue
                have_length = True
                value = length
            out.append(f"{name}: {value}" if value else f"{name}:")
        if not have_length:
            out.append(f"Content-Length: {length}")
        out.append("\r\n")
        return "\r\n".join(out).encode("utf-8", "surrogateescape") + self.body

    # Typed views (cached; parse errors only for headers parse_message did not check) --------------------------
    @property
    def vias(self) -> list[Via]:
        """All Via values, top first."""
        return self.headers.typed("via:all", _vias)

    # The hot views read the cache first: they are used dozens of times per message.
    @property
    def via(self) -> Via:
        """The top Via (§8.1.1.7)."""
        value: Via | None = self.headers._cache.get("via")
        return value if value is not None else self.headers.typed("via", _top_via)

    @property
    def from_(self) -> Address:
        value: Address | None = self.headers._cache.get("from")
        return value if value is not None else self.headers.typed("from", _from)

    @property
    def to(self) -> Address:
        value: Address | None = self.headers._cache.get("to")
        return value if value is not None else self.headers.typed("to", _to)

    @property
    def call_id(self) -> str:
        value: str | None = self.headers._cache.get("call-id")
        return value if value is not None else self.headers.typed("call-id", _call_id)

    @property
    def cseq(self) -> CSeq:
        value: CSeq | None = self.headers._cache.get("cseq")
        return value if value is not None else self.headers.typed("cseq", _cseq)

    @property
    def contacts(self) -> list[Address]:
        """Contact addresses (``*`` is skipped; check ``headers.get("contact") == "*"`` for REGISTER)."""
        value: list[Address] | None = self.headers._cache.get("contact:all")
        return value if value is not None else self.headers.typed("contact:all", _contacts)

    @property
    def max_forwards(self) -> int | None:
        return self.headers.typed("max-forwards", _max_forwards)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.strip() if value is not None else None

    def validate(self) -> None:
        """Check the mandatory headers and parse the top Via, From, To and CSeq (raises SipParseError); a request's
        CSeq method must be its method, and its Max-Forwards is parsed too."""
        _validate(self, self.headers.first_values())


def _validate(msg: Message, first: dict[str, str]) -> None:
    """:meth:`Message.validate` with the first-value map at hand (parse_message runs it on every message)."""
    if not _MANDATORY_KEYS <= first.keys():
        for key, label in _MANDATORY:
            if key not in first:
                raise SipParseError(f"missing mandatory header {label}")
    # The views are stored directly (what the properties would cache).
    cache = msg.headers._cache
    call_id = first["call-id"].strip()
    if not call_id:
        raise SipParseError("malformed Call-ID")
    cache["call-id"] = call_id
    if "via" not in cache:
        via = first["via"]  # the top value, as _top_via takes it
        if "," in via:
            vias = split_list(via)
            via = vias[0] if vias else ""
        else:
            via = via.strip()
        if not via:
            raise SipParseError("malformed Via")
        cache["via"] = Via.parse(via)
    if "from" not in cache:
        cache["from"] = Address.parse(first["from"])
    if "to" not in cache:
        cache["to"] = Address.parse(first["to"])
    cseq: CSeq | None = cache.get("cseq")
    if cseq is None:
        cseq = cache["cseq"] = CSeq.parse(first["cseq"])
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise SipParseError("CSeq method does not match the request method")
        if "max-forwards" not in cache:  # parsed now (raises on a malformed value), as the property would
            cache["max-forwards"] = _max_forwards_of(first.get("max-forwards"))


class Request(Message):
    """A SIP request (§7.1). ``uri`` is the Request-URI."""

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: URI, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()  # Message.__init__ inline: one per message
        self.body = body
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    def create_response(self, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
        """A response per §8.2.6.2: Via lines, From, Call-ID and CSeq copied; To copied, with ``to_tag`` added if it
        has none (not on 100). Timestamp is copied into a 100 (§8.2.6.1)."""
        src = self.headers
        h = Headers()
        lines = h._lines
        src_lines = src._lines
        first = src._cache.get("")
        copied: dict[str, tuple[str, str, str]]
        if first is not None and len(first) == len(src_lines):
            # No name on two lines (the usual request, one Via): its lines by name, in one pass.
            copied = {line[0]: line for line in src_lines}
            via = copied.get("via")
            if via is not None:
                lines.append(via)
        else:
            copied = {}
            for line in src_lines:
                key = line[0]
                if key == "via":
                    lines.append(line)
                elif key in _COPIED_SET and key not in copied:
                    copied[key] = line
        cache = h._cache
        src_cache = src._cache
        tagged = False
        if to_tag is not None and status != 100:
            try:
                to: Address | None = self.to
            except SipParseError:
                to = None  # answering a malformed request: its To is copied as it came
            if to is not None and to.tag is None:
                copied["to"] = ("to", "To", to.tagged_text(to_tag))  # in the place of the request's To line
                tagged = True
        for key in _COPIED:
            kept = copied.get(key)
            if kept is not None:
                lines.append(kept)
        # The copied lines are the same, so are their parsed views (a response is matched by its Via and CSeq).
        for key in _COPIED_VIEWS:
            value = src_cache.get(key)
            if value is not None:
                cache[key] = value
        if tagged:
            cache.pop("to", None)
        h._views = 1 if "via:all" in cache else 0
        if status == 100:
            ts = src.get("timestamp")
            if ts is not None:
                h.add("Timestamp", ts)
        return Response(status, reason, h)

    def create_cancel(self) -> Request:
        """A CANCEL for this (sent) INVITE per §9.1: same Request-URI, top Via (so the same branch), Route set, From,
        To, Call-ID and CSeq number; send it with ``TransactionLayer.send_request`` (its own transaction)."""
        src = self.headers
        vias = src.get_all("via")
        if not vias:
            raise SipParseError("missing mandatory header Via")
        h = Headers()
        h.add("Via", vias[0])
        for route in src.get_all("route"):
            h.add("Route", route)
        h.add("Max-Forwards", DEFAULT_MAX_FORWARDS)
        for key, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID")):
            h.add(label, _required(src, key, label))
        h.add("CSeq", f"{self.cseq.seq} CANCEL")
        return Request("CANCEL", self.uri, h)


class Response(Message):
    """A SIP response (§7.2)."""

    __slots__ = ("status", "reason")

    def __init__(
        self, status: int, reason: str | None = None, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        self.headers = headers if headers is not None else Headers()  # as Request
        self.body = body
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Unknown")

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def can_answer(error: SipParseError) -> Request | None:
    """The partial request to build an error response from: a request (not an ACK, §17.1.1.3) with at least one Via
    line. The response copies the Via, From, To, Call-ID and CSeq lines as they are, even missing or malformed
    (§8.2.6.2); a Via that cannot be parsed is answered to the source address (as ``rport`` would)."""
    partial = getattr(error, "partial", None)
    if not isinstance(partial, Request) or partial.method == "ACK" or "via" not in partial.headers:
        return None
    return partial


def stamp_via(request: Request, host: str, port: int) -> None:
    """§18.2.1 + RFC 3581 §4: add ``received`` when the sent-by differs from the source, fill an empty ``rport``."""
    via = request.via
    new = via
    if via.has_rport and via.rport is None:
        new = via.with_param("rport", str(port)).with_param("received", host)
    elif via.host != host:
        new = via.with_param("received", host)
    if new is not via:
        request.headers.set_first("Via", new)


def error_response(
    error: SipParseError, source_host: str, source_port: int, to_tag: str
) -> tuple[Response, str, int] | None:
    """The answer to a request that failed to parse (see :func:`can_answer`), or None to drop the input.

    Returns the response (status from the error, a ``Warning`` naming the problem) and where an unreliable transport
    sends it: §18.2.2 from the top Via, or the source address when that Via is unreadable. Over a reliable transport
    it goes back on the connection the request came on."""
    partial = can_answer(error)
    if partial is None:
        return None
    host, port = source_host, source_port
    try:
        via: Via | None = partial.via
    except SipParseError:
        via = None  # the Via lines are copied as they came
    if via is not None:
        stamp_via(partial, source_host, source_port)
        host, port = response_destination(partial.via, source_host, source_port)
    status = error.status or 400
    response = partial.create_response(status, REASONS.get(status, "Bad Request"), to_tag=to_tag)
    response.headers.add("Warning", f'399 callplane "{error}"')
    return response, host, port


def _fail(message: str, partial: Request | None = None, status: int = 400) -> SipParseError:
    err = SipParseError(message, status)
    err.partial = partial  # type: ignore[attr-defined]
    return err


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message (§7). On a datagram, bytes after Content-Length are discarded and a short body is an
    error (§18.3); with ``stream=True`` (a frame from :class:`StreamFramer`) Content-Length is mandatory."""
    if len(data) > MAX_DATAGRAM and not stream:
        raise _fail("message too large", None, 513)
    if data[:1] in (b"\r", b"\n"):
        # Leading CRLFs before the start line are ignored (§7.5).
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head = data[:end]
        body_start = end + 4
    else:
        end = data.find(b"\n\n")
        if end < 0:
            raise _fail("incomplete header block")
        head = data[:end]
        body_start = end + 2
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    if len(lines) == 1:  # no CRLF: bare LF line ends (or a lone start line, the same either way)
        lines = text.split("\n")
    if not lines or not lines[0]:
        raise _fail("empty message")
    start = lines[0]
    msg: Request | Response
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0" or len(parts[1]) != 3 or not parts[1].isdigit():
            raise _fail("malformed status line")
        status = int(parts[1])
        if status < 100 or status > 699:
            raise _fail("malformed status line")
        msg = Response(status, parts[2] if len(parts) > 2 else "")
    else:
        parts = start.split(" ")
        method = parts[0]
        if not method or not TOKEN_CHARS.issuperset(method):
            raise _fail("malformed request line")
        if len(parts) != 3 or parts[2] != "SIP/2.0":
            # Still a request (RFC 4475 §3.1.2.8-10, .16): read the headers so that the error can be answered.
            bad = Request(method, URI("sip", "invalid"))
            with contextlib.suppress(SipParseError):
                _parse_headers(lines, bad)
            if len(parts) == 3 and parts[2].startswith("SIP/"):
                raise _fail("unsupported SIP version", bad, 505)
            raise _fail("malformed request line", bad)
        try:
            uri: URI | None = URI.parse(parts[1])
        except SipParseError:
            uri = None
        msg = Request(method, uri if uri is not None else URI("sip", "invalid"))
        if uri is None or uri.opaque is not None:
            _parse_headers(lines, msg)
            if uri is None:
                raise _fail("malformed Request-URI", msg)
            raise _fail("unsupported URI scheme", msg, 416)  # §8.2.2.1
        if uri.headers is not None:
            _parse_headers(lines, msg)
            raise _fail("headers in Request-URI", msg)  # §19.1.5 (RFC 4475 §3.1.2.11)
    try:
        _parse_headers(lines, msg, False)  # folding is rare: found by the line that starts with a space or tab
    except _Folded:
        msg.headers._lines.clear()
        _parse_headers(lines, msg)
    partial = msg if isinstance(msg, Request) else None
    headers = msg.headers
    first = headers.first_values()
    # Body (§18.3 / §20.14).
    length_text = first.get("content-length")
    if length_text is None:
        if stream:
            raise _fail("missing Content-Length on a stream", partial)
        msg.body = data[body_start:]
    else:
        length_text = length_text.strip()
        if not length_text.isdigit() or not length_text.isascii():
            raise _fail("malformed Content-Length", partial)
        length = int(length_text)
        if body_start + length > len(data):
            raise _fail("body shorter than Content-Length", partial)
        msg.body = data[body_start : body_start + length]
    try:
        _validate(msg, first)
    except SipParseError as exc:
        raise _fail(str(exc), partial, exc.status or 400) from None
    return msg


# Header names seen before -> canonical key (names repeat across messages; bounded against junk names).
_KEYS: dict[str, str] = {}
_KEYS_MAX = 1024


class _Folded(Exception):
    """A header line starts with a space or tab: parse again with ``folded=True``."""


def _parse_headers(lines: list[str], msg: Message, folded: bool = True) -> None:
    """Append the header lines (``lines[1:]``) to ``msg``. ``folded=False`` spares the continuation check on every
    line, and raises :class:`_Folded` at a line that starts with a space or tab (a name never does)."""
    out = msg.headers._lines
    keys = _KEYS
    if not folded:
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            key = keys.get(name)
            if key is None or not colon:
                key, name = _header_key(name, colon, msg)
            out.append((key, name, value.strip()))
    else:
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                # Folded continuation line (§7.3.1): join with a single space.
                if not out:
                    raise _fail("malformed header folding")
                k, n, v = out[-1]
                out[-1] = (k, n, f"{v} {line.strip()}" if v else line.strip())
                continue
            name, colon, value = line.partition(":")
            key = keys.get(name)
            if key is None or not colon:
                key, name = _header_key(name, colon, msg)
            out.append((key, name, value.strip()))
    msg.headers._cache.clear()
    msg.headers._views = 0


def _header_key(name: str, colon: str, msg: Message) -> tuple[str, str]:
    """The canonical key and the name as written of a header line not seen before (or without a colon: raises)."""
    if name[:1] in (" ", "\t"):
        raise _Folded  # only without folded=True: a continuation line is joined before its name is looked at
    if not colon:
        raise _fail("malformed header line", msg if isinstance(msg, Request) else None)
    name = name.rstrip()
    if not name or not TOKEN_CHARS.issuperset(name):
        raise _fail("malformed header name", msg if isinstance(msg, Request) else None)
    key = canonical_name(name)
    if len(_KEYS) < _KEYS_MAX:
        _KEYS[name] = key
    return key, name


class StreamFramer:
    """Cut whole messages out of a byte stream using Content-Length (§18.3). One instance per connection.

    ``feed()`` returns complete frames (bytes, to pass to ``parse_message(frame, stream=True)``) and keeps the
    remainder. CRLF keep-alives between messages (RFC 5626 §3.5.1) are skipped and counted in ``pings``.
    Raises :class:`FramingError` when the stream cannot be framed any more; the connection should then be closed.
    """

    __slots__ = ("_buf", "_scanned", "max_size", "pings")

    def __init__(self, max_size: int = MAX_DATAGRAM) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the end of the header block
        self.max_size = max_size
        self.pings = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        while True:
            # Skip keep-alive CRLFs between messages.
            skip = 0
            while buf[skip : skip + 2] == b"\r\n":
                skip += 2
            if skip:
                self.pings += skip // 4
                del buf[:skip]
            if len(buf) == 1 and buf[0] == 0x0D:
                break
            # Resume the search where the last one stopped, so a trickled header block costs O(n), not O(n^2).
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_size:
                    raise FramingError("header block too large", 513)
                break
            self._scanned = 0
            length = _content_length(bytes(buf[:end]))
            total = end + 4 + length
            if total > self.max_size:
                raise FramingError("message too large", 513)
            if len(buf) < total:
                break
            frames.append(bytes(buf[:total]))
            del buf[:total]
        return frames


def _content_length(head: bytes) -> int:
    for raw in head.split(b"\r\n")[1:]:
        name, colon, value = raw.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise FramingError("malformed Content-Length")
            return int(text)
    raise FramingError("missing Content-Length on a stream")


def response_destination(via: Via, source_host: str, source_port: int) -> tuple[str, int]:
    """Where to send a response over an unreliable transport (§18.2.2, RFC 3581 §4).

    ``maddr`` wins, then ``received`` + ``rport``, then ``received`` + sent-by port (default 5060). Over a
    reliable transport, reuse the connection the request came on instead (the caller's job).
    """
    default_port = 5061 if via.transport in ("TLS", "WSS") else 5060
    # One pass over the parameters instead of a lookup each (maddr, received, rport): this runs for every request.
    # The first occurrence of a name counts, as for Via.param.
    maddr = received = rport_text = None
    has_rport = False
    for name, value in via.params:
        if name == "branch":
            continue  # in every Via, and none of these
        lname = name.lower()
        if lname == "maddr":
            maddr = value if maddr is None else maddr
        elif lname == "received":
            received = value if received is None else received
        elif lname == "rport" and not has_rport:
            has_rport = True
            rport_text = value
    if maddr:
        return maddr, via.port or default_port
    host = received or source_host
    if rport_text is not None and rport_text.isdigit() and rport_text.isascii():
        return host, int(rport_text)
    if has_rport:
        return host, source_port
    return host, via.port or default_port


def decrement_max_forwards(request: Request) -> int:
    """Decrement Max-Forwards (adding 70 if absent) and return the new value; raise :class:`TooManyHops` at 0."""
    current = request.max_forwards
    if current is None:
        current = DEFAULT_MAX_FORWARDS
    if current <= 0:
        raise TooManyHops()
    request.headers.set("Max-Forwards", current - 1)
    return current - 1
