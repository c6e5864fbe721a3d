"""Typed SIP wire values: :class:`URI`, :class:`Address`, :class:`Via` and :class:`CSeq` (RFC 3261 §19, §20, §25).

Each value is a frozen, slotted dataclass with ``parse(text)`` and ``__str__``. Parse failures raise
:class:`SipParseError` (a ``ValueError`` and a ``SipError`` carrying status 400) with a stable message.

Parameters are kept as a tuple of ``(name, value)`` pairs in wire order, ``value`` is ``None`` for a flag
parameter such as ``;lr`` or a bare ``;rport``. Lookups (:meth:`URI.param`, :meth:`Via.param`...) ignore the case
of the name (RFC 3261 §19.1.4); serialisation keeps the case as written. Values are immutable: use the
``with_param`` / ``without_param`` / :func:`dataclasses.replace` helpers to derive new ones.

Public names::

    URI.parse("sip:alice@example.com:5060;transport=tcp")  -> URI(scheme, host, user, password, port, params, headers)
    Address.parse('"Alice" <sip:alice@example.com>;tag=1928') -> Address(display_name, uri, params); .tag
    Via.parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport") -> Via(transport, host, port, params); .branch .rport
    CSeq.parse("314159 INVITE")                                -> CSeq(seq, method)
    split_list(value)    top-level comma split (not inside quotes or <>), RFC 3261 §7.3.1
    parse_params(text)   ";a=b;c" -> (("a", "b"), ("c", None))
    remember(cache, key, value, limit)    FIFO-bounded memo table (the URI, Address, CSeq, Via sent-by and SDP caches)
    TextOnce             base of values whose str() is made once (URI; SDP's SessionDescription)
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from itertools import islice
from typing import Any, ClassVar, Self, TypeVar

from callplane.core.errors import SipError

__all__ = [
    "SipParseError",
    "URI",
    "Address",
    "Via",
    "CSeq",
    "Params",
    "split_list",
    "parse_params",
    "format_params",
    "MAGIC_COOKIE",
    "KNOWN_TRANSPORTS",
    "TOKEN_CHARS",
    "remember",
    "TextOnce",
]

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: branch ids of RFC 3261 elements start with this."""

KNOWN_TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "SCTP", "WS", "WSS"})

Params = tuple[tuple[str, str | None], ...]


class SipParseError(SipError, ValueError):
    """Malformed SIP input. ``status`` is the response to answer with (400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


# RFC 3261 §25.1 token characters.
_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.!%*_+`'~-")
"""The characters of a ``token`` (RFC 3261 §25.1)."""
_DISPLAY_CHARS = TOKEN_CHARS | frozenset(" \t")  # an unquoted display name of only these needs no closer look
_PORT_MAX = 65535
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def _split_outside(text: str, sep: str, *, angle_brackets: bool) -> list[str]:
    """Split ``text`` on ``sep`` where it stands outside quoted strings (and ``<...>`` if ``angle_brackets``)."""
    parts: list[str] = []
    start = 0
    quoted = angle = escape = False
    for i, ch in enumerate(text):
        if escape:
            escape = False
        elif quoted:
            if ch == "\\":
                escape = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif angle_brackets and ch == "<":
            angle = True
        elif angle_brackets and ch == ">":
            angle = False
        elif ch == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def split_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quoted strings and ``<...>`` (RFC 3261 §7.3.1)."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    return [p for p in (part.strip() for part in _split_outside(value, ",", angle_brackets=True)) if p]


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (leading ``;`` optional) into ordered pairs (RFC 3261 §25.1 generic-param)."""
    text = text.strip()
    if not text:
        return ()
    if text[0] == ";":
        text = text[1:]
    out: list[tuple[str, str | None]] = []
    known = _PARAM_NAMES
    for piece in text.split(";") if '"' not in text else _split_outside(text, ";", angle_brackets=False):
        name, eq, value = piece.partition("=")
        name = name.strip()
        if name not in known:
            if not name or not _is_token(name):
                raise SipParseError("malformed parameter")
            if len(known) < 256:
                known.add(name)
        out.append((name, value.strip() if eq else None))
    return tuple(out)


# Parameter names already checked to be tokens (branch, tag, rport, lr...); bounded against names built from input.
_PARAM_NAMES: set[str] = set()


def format_params(params: Params) -> str:
    """``(("a", "b"), ("c", None))`` -> ``";a=b;c"``."""
    return "".join([f";{n}" if v is None else f";{n}={v}" for n, v in params])  # a list: no generator frame


# Parameter names are tokens (ASCII), whose lower case has the same length: comparing lengths first spares most of the
# lower() calls (these lookups run a few dozen times per SIP call: branch, tag, rport, received...).
# A name written in lower case (the usual spelling) matches without lower() at all.
def _get(params: Params, name: str) -> str | None:
    lname = name.lower()
    size = len(lname)
    for n, v in params:
        if n == lname or (len(n) == size and n.lower() == lname):
            return v
    return None


def _has(params: Params, name: str) -> bool:
    lname = name.lower()
    size = len(lname)
    for n, _ in params:  # a loop, not any(<generator>): this runs for every response's Via (rport)
        if n == lname or (len(n) == size and n.lower() == lname):
            return True
    return False


def _with(params: Params, name: str, value: str | None) -> Params:
    lname = name.lower()
    out = []
    replaced = False
    for n, v in params:
        if n.lower() == lname:
            if not replaced:
                out.append((n, value))
                replaced = True
        else:
            out.append((n, v))
    if not replaced:
        out.append((name, value))
    return tuple(out)


def _without(params: Params, name: str) -> Params:
    lname = name.lower()
    return tuple((n, v) for n, v in params if n.lower() != lname)


_C = TypeVar("_C")


def quick_init(cls: type[_C]) -> type[_C]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field through its slot's own setter.

    The generated one of a frozen dataclass calls ``object.__setattr__(self, name, value)`` per field, which looks the
    name up on the type every time: about 40% of the cost of making the wire values and events of every message
    (several Vias, Addresses and events per call). Same signature, defaults and values; the class stays frozen.
    Fields with a ``default_factory``, keyword-only fields and ``__post_init__`` are not supported (refused)."""
    if not is_dataclass(cls) or not cls.__dataclass_params__.frozen or "__slots__" not in cls.__dict__:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    scope: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for n, f in enumerate(fields(cls)):
        if f.default_factory is not MISSING or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: default_factory and kw_only fields are not supported")
        scope[f"_set{n}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is not MISSING:
            scope[f"_default{n}"] = f.default
        if f.init:
            params.append(f.name if f.default is MISSING else f"{f.name}=_default{n}")
            body.append(f"    _set{n}(self, {f.name})")
        else:
            body.append(f"    _set{n}(self, _default{n})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"]), scope)  # noqa: S102
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class TextOnce:
    """``str()`` of an immutable wire value, made by ``_format()`` once and kept in its ``_text`` field (declare it
    ``field(default=None, init=False, repr=False, compare=False)``): remembered values recur in many messages."""

    __slots__ = ()
    _text: str | None

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._format()
            object.__setattr__(self, "_text", text)  # a frozen value: its text never changes
        return text

    def _format(self) -> str:
        raise NotImplementedError


class _WithParams:
    """Parameter accessors shared by the wire values that carry ``;name=value`` parameters (URI, Address, Via)."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]
    params: Params

    def param(self, name: str) -> str | None:
        """Value of a parameter (``None`` if absent or a flag); names compare case-insensitively."""
        return _get(self.params, name)

    def has_param(self, name: str) -> bool:
        return _has(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> Self:
        return self._with_params(_with(self.params, name, value))

    def without_param(self, name: str) -> Self:
        return self._with_params(_without(self.params, name))

    def _with_params(self, params: Params) -> Self:
        """A copy with other parameters (the values override it with a direct constructor call: on the path of every
        call, where ``dataclasses.replace`` costs several times as much)."""
        return replace(self, params=params)


def _parse_hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (RFC 3261 §25.1 hostport)."""
    if not text:
        raise SipParseError("missing host")
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            raise SipParseError("malformed IPv6 reference")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if not _HEX_CHARS.issuperset(host[1:-1]) or len(host) < 4:
            raise SipParseError("malformed IPv6 reference")
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError("malformed host")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if not host or not _HOST_CHARS.issuperset(host):
            raise SipParseError("malformed host")
        if not colon:
            return host, None
    if not port_text.isdigit() or not port_text.isascii() or int(port_text) > _PORT_MAX:
        raise SipParseError("malformed port")
    return host, int(port_text)


# Values are immutable, and the same From/To/Contact/Request-URI text recurs in every message of a dialog, so
# successful parses are memoised. Bounded: when full, the oldest eighth makes room (a dict keeps insertion order), so
# more live URIs than the bound cost a re-parse of the oldest ones, never a cold table, and junk cannot grow it.
# Evicting in batches matters: a dict whose oldest entry is deleted one at a time scans every deleted slot before it
# to find the next oldest, about 5 us per new entry once the table is full (each call brings new From/To tags).
_CACHE_MAX = 8192
_URI_CACHE: dict[str, URI] = {}
_ADDRESS_CACHE: dict[str, Address] = {}

_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(cache: dict[_K, _V], key: _K, value: _V, limit: int = _CACHE_MAX) -> None:
    """``cache[key] = value`` in a FIFO-bounded memo table of at most ``limit`` entries."""
    if len(cache) >= limit:
        for old in list(islice(cache, max(1, limit // 8))):
            del cache[old]
    cache[key] = value


def _format_hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@quick_init
@dataclass(frozen=True, slots=True)
class URI(TextOnce, _WithParams):
    """A ``sip:``, ``sips:`` (RFC 3261 §19.1) or ``tel:`` (RFC 3966) URI, or any other absoluteURI kept opaque.

    For ``tel:`` the number is in ``user`` and ``host`` is empty. ``headers`` is the raw text after ``?``. Other
    schemes (``mailto:``, ``urn:``...) have ``host == ""`` and their text after the colon in ``opaque``.
    """

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: str | None = None
    opaque: str | None = None
    # str(), made once: remembered URIs (see URI.parse) recur in every message of a dialog and in each call's events.
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> URI:
        cached = _URI_CACHE.get(text)
        if cached is not None:
            return cached
        uri = cls._parse(text)
        remember(_URI_CACHE, text, uri)
        return uri

    @classmethod
    def _parse(cls, text: str) -> URI:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or not rest:
            raise SipParseError("malformed URI")
        if scheme == "tel":
            number, _, ptext = rest.partition(";")
            if not number or any(c in number for c in " <>@\"'"):
                raise SipParseError("malformed tel URI")
            return cls(scheme, "", number, None, None, parse_params(ptext))
        if scheme not in ("sip", "sips"):
            # absoluteURI (RFC 3261 §25.1): kept opaque; a Request-URI like this is answered 416 by the parser.
            if not _is_token(scheme) or not scheme[0].isalpha() or any(c in rest for c in ' <>"\t'):
                raise SipParseError("malformed URI")
            return cls(scheme, "", opaque=rest)
        user: str | None = None
        password: str | None = None
        at = rest.rfind("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            user, pcolon, pw = userinfo.partition(":")
            if pcolon:
                password = pw
            if not user or any(c in user for c in ' <>"\t'):
                raise SipParseError("malformed URI user")
        hostpart, qmark, headers = rest.partition("?")
        hostport, _, ptext = hostpart.partition(";")
        host, port = _parse_hostport(hostport)
        return cls(scheme, host, user, password, port, parse_params(ptext) if ptext else (), headers if qmark else None)

    def _with_params(self, params: Params) -> Self:
        return type(self)(
            self.scheme, self.host, self.user, self.password, self.port, params, self.headers, self.opaque
        )

    def _format(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(_format_hostport(self.host, self.port))
        if self.params:
            out.append(format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter in upper case (RFC 3261 §19.1.4: parameter values compare case-insensitively)."""
        value = self.param("transport")
        return value.upper() if value else None

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def lr(self) -> bool:
        """True for a loose-routing URI (RFC 3261 §16.12)."""
        return self.has_param("lr")


def _unquote(text: str) -> str:
    """Strip the quotes of a quoted-string and undo ``\\`` escapes."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    escape = False
    for ch in inner:
        if escape:
            out.append(ch)
            escape = False
        elif ch == "\\":
            escape = True
        else:
            out.append(ch)
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@quick_init
@dataclass(frozen=True, slots=True)
class Address(TextOnce, _WithParams):
    """name-addr / addr-spec with header parameters: From, To, Contact, Route, Record-Route (RFC 3261 §20.10, §25.1).

    ``display_name`` is unquoted (``None`` when absent). Serialisation always uses the ``<...>`` form.
    """

    uri: URI
    display_name: str | None = None
    params: Params = ()
    _tag: tuple[str | None] | None = field(default=None, init=False, repr=False, compare=False)  # tag, looked up once
    # str(), made once: a remembered To or Contact recurs in every call from a peer (a response's To is this + tag).
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Address:
        cached = _ADDRESS_CACHE.get(text)
        if cached is not None:
            return cached
        # A From or To with a new tag (every call brings two) is a remembered address plus ``;tag=``: the text before
        # the tag is looked up, and only a full parse remembers it. A tag is a token, so the split is the last
        # parameter's boundary (no quote or ``>`` can follow it).
        head, sep, tag = text.rpartition(";tag=")
        tagged = bool(sep) and bool(tag) and TOKEN_CHARS.issuperset(tag)
        if tagged:
            base = _ADDRESS_CACHE.get(head)
            if base is not None:
                address = cls(base.uri, base.display_name, (*base.params, ("tag", tag)))
                remember(_ADDRESS_CACHE, text, address)
                return address
        address = cls._parse(text)
        remember(_ADDRESS_CACHE, text, address)
        if tagged and address.params and address.params[-1] == ("tag", tag):
            remember(_ADDRESS_CACHE, head, cls(address.uri, address.display_name, address.params[:-1]))
        return address

    @classmethod
    def _parse(cls, text: str) -> Address:
        text = text.strip()
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        rest = text
        if rest[0] == '"':
            i = 1
            escape = False
            while i < len(rest):
                ch = rest[i]
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    break
                i += 1
            else:
                raise SipParseError("unterminated quoted string")
            display = _unquote(rest[: i + 1])
            rest = rest[i + 1 :].lstrip()
            if not rest.startswith("<"):
                raise SipParseError("malformed address")
        lt = rest.find("<")
        if lt >= 0:
            if display is None:
                name = rest[:lt].strip()
                # An unquoted display name is tokens (§25.1); UTF-8 beyond ASCII is let through for real phones.
                if not _DISPLAY_CHARS.issuperset(name) and any(
                    not (c in TOKEN_CHARS or c.isspace() or not c.isascii()) for c in name
                ):
                    raise SipParseError("malformed display name")
                display = name or None
            gt = rest.find(">", lt)
            if gt < 0:
                raise SipParseError("malformed address")
            inner = rest[lt + 1 : gt]
            if inner != inner.strip():
                raise SipParseError("malformed address")  # no LWS inside < > (RFC 4475 §3.1.2.14)
            uri = URI.parse(inner)
            ptext = rest[gt + 1 :]
        else:
            # addr-spec form: parameters after the URI belong to the header, not the URI (RFC 3261 §20.10).
            uri_text, semi, ptext = rest.partition(";")
            ptext = semi + ptext
            if " " in uri_text.strip() or "?" in uri_text:
                raise SipParseError("malformed address")
            uri = URI.parse(uri_text)
        ptext = ptext.strip()
        if ptext and ptext[0] != ";":
            raise SipParseError("malformed address")
        return cls(uri, display, parse_params(ptext))

    def _with_params(self, params: Params) -> Self:
        return type(self)(self.uri, self.display_name, params)

    def _format(self) -> str:
        head = f"{_quote(self.display_name)} " if self.display_name is not None else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"

    def tagged_text(self, tag: str) -> str:
        """``str(self.with_tag(tag))``, without making the new value when there is no ``tag`` parameter to replace."""
        if _has(self.params, "tag"):
            return str(self.with_tag(tag))
        return f"{self};tag={tag}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3)."""
        memo = self._tag  # read a dozen times per call (dialog matching): the parameters are scanned once
        if memo is None:
            memo = (_get(self.params, "tag"),)
            object.__setattr__(self, "_tag", memo)
        return memo[0]

    def with_tag(self, tag: str) -> Address:
        return self.with_param("tag", tag)


_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9.!%*_+`'~-]+)\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)"
    r"\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?:\s*:\s*([0-9]{1,5}))?\s*"
)


def _sent_by(head: str) -> tuple[str, str, int | None, str]:
    """``(transport, host, port, protocol)`` of a Via value's text before its first ``;``."""
    m = _VIA_RE.match(head)
    if m is None or m.end() != len(head):
        raise SipParseError("malformed Via")
    name, version, transport, host, port_text = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > _PORT_MAX:
            raise SipParseError("malformed Via")
    return transport.upper(), host, port, f"{name}/{version}"


_SENT_BY_CACHE: dict[str, tuple[str, str, int | None, str]] = {}


@quick_init
@dataclass(frozen=True, slots=True)
class Via(_WithParams):
    """One Via value (RFC 3261 §20.42, §18.2.1; ``rport`` from RFC 3581).

    ``transport`` is upper-cased. Any token is accepted so that the caller can answer 400 for an unknown
    transport instead of failing to parse (see :data:`KNOWN_TRANSPORTS`).
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        # The part before the parameters ("SIP/2.0/UDP host:port") repeats in every message from a peer: its fields
        # are remembered, and only the parameters (a new branch each time) are parsed.
        head = text.partition(";")[0]
        sent = _SENT_BY_CACHE.get(head)
        if sent is None:
            sent = _sent_by(head)
            remember(_SENT_BY_CACHE, head, sent, 1024)
        transport, host, port, protocol = sent
        return cls(transport, host, port, parse_params(text[len(head) :]) if len(head) < len(text) else (), protocol)

    def _with_params(self, params: Params) -> Self:
        return type(self)(self.transport, self.host, self.port, params, self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {_format_hostport(self.host, self.port)}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        params = self.params
        if params and params[0][0] == "branch":  # where every stack puts it: no scan (read several times per call)
            return params[0][1]
        return _get(params, "branch")

    @property
    def received(self) -> str | None:
        return _get(self.params, "received")

    @property
    def maddr(self) -> str | None:
        return _get(self.params, "maddr")

    @property
    def has_rport(self) -> bool:
        """True if ``rport`` is present, with or without a value (RFC 3581 §3)."""
        return _has(self.params, "rport")

    @property
    def rport(self) -> int | None:
        """The numeric ``rport`` value filled in by the server, else ``None``."""
        value = _get(self.params, "rport")
        if value is None or not value.isdigit() or not value.isascii():
            return None
        return int(value)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host.lower(), self.port

    @property
    def is_rfc3261(self) -> bool:
        """True if the branch carries the RFC 3261 magic cookie (§17.2.3)."""
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    @property
    def reliable(self) -> bool:
        """True for transports with their own retransmission (§17.1.1.2: TCP, TLS, SCTP, WS, WSS)."""
        return self.transport != "UDP"


_CSEQ_CACHE: dict[str, CSeq] = {}
_CSEQ_RE = re.compile(r"\s*([0-9]{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)\s*")


@quick_init
@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number below 2**31 and the method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        cached = _CSEQ_CACHE.get(text)  # "1 INVITE", "2 BYE"...: a few texts make up nearly every message
        if cached is not None:
            return cached
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise SipParseError("malformed CSeq")
        seq = int(m.group(1))
        if seq >= 2**31:
            raise SipParseError("malformed CSeq")
        cseq = cls(seq, m.group(2))
        remember(_CSEQ_CACHE, text, cseq, 1024)
        return cseq

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
