"""SDP session descriptions (RFC 4566) and the audio offer/answer model (RFC 3264).

Scope: one audio stream carrying PCMU (0) or PCMA (8) plus RFC 4733 telephone-events, which is what a programmable-voice
node needs. Other media sections are kept intact when parsing and are refused (port 0) when answering.

* :class:`SessionDescription` / :class:`MediaSection` are the wire values: ``parse()`` and ``str()``; unknown lines are
  kept and written back in the order RFC 4566 §5 prescribes.
* :func:`build_offer`, :func:`answer_offer` and :func:`change_direction` make local descriptions.
* :func:`describe` reduces a remote description to a :class:`MediaDescription`, the small value the engine hands to the
  media layer (sip and media never import each other, so this is plain data).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from callplane.core.errors import SipError
from callplane.sip.headers import TextOnce, quick_init, remember

__all__ = [
    "AUDIO_CODECS",
    "Connection",
    "Direction",
    "MediaDescription",
    "MediaSection",
    "NegotiationError",
    "Origin",
    "SdpParseError",
    "SessionDescription",
    "answer_offer",
    "build_offer",
    "change_direction",
    "refuse_offer",
    "describe",
    "is_hold",
    "mirror_direction",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

#: Codec names we can carry, with their static RTP payload types (RFC 3551 table 4).
AUDIO_CODECS: dict[str, int] = {"PCMU": 0, "PCMA": 8}
_STATIC_NAMES: dict[int, tuple[str, int]] = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_STATIC_BY_TEXT = {str(pt): value for pt, value in _STATIC_NAMES.items()}
_TELEPHONE_EVENT = "telephone-event"

# RFC 4566 §5: the order in which session-level and media-level lines appear.
_SESSION_ORDER = "vosiuepcbtrzkam"
_MEDIA_ORDER = "micbka"


class SdpParseError(ValueError):
    """The text is not a well-formed session description (RFC 4566)."""


class NegotiationError(SipError):
    """No acceptable media in an offer: answer the INVITE with 488 Not Acceptable Here (RFC 3264 §6)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=488)


@quick_init
@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 4566 §5.2). ``version`` grows by one with each new offer or answer (RFC 3264 §8)."""

    username: str
    session_id: str
    version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpParseError(f"bad o= line: {value!r}")
        try:
            version = int(parts[2])
        except ValueError:
            raise SdpParseError(f"bad o= version: {value!r}") from None
        return cls(parts[0], parts[1], version, parts[5], parts[3], parts[4])

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.version} {self.nettype} {self.addrtype} {self.address}"


@quick_init
@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` (RFC 4566 §5.7)."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpParseError(f"bad c= line: {value!r}")
        # A multicast TTL suffix ("/127") is not ours to use; keep only the host part.
        return cls(parts[2].split("/")[0], parts[0], parts[1])

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, "IN", "IP6" if ":" in address else "IP4")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@quick_init
@dataclass(frozen=True, slots=True)
class MediaSection:
    """One ``m=`` section with its lines (RFC 4566 §5.14). ``attributes`` keeps order; flags have value ``None``."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()
    other: tuple[tuple[str, str], ...] = ()  # i=, b=, k= lines, kept verbatim
    # Memo of _choose per list of supported codecs: a remembered parse (see _PARSED) is chosen from once, not per call.
    _choices: dict[tuple[str, ...], tuple[str, str, int, str | None] | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value``; ``None`` when absent or a flag."""
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [value for key, value in self.attributes if key == name and value is not None]

    @property
    def direction(self) -> Direction | None:
        """The direction attribute of this section, if it has one (RFC 4566 §6)."""
        for key, _ in self.attributes:
            if key in _DIRECTIONS:
                return key
        return None

    def rtpmap(self) -> dict[str, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate), from ``a=rtpmap`` plus the static table (RFC 3551)."""
        result: dict[str, tuple[str, int]] = {}
        for fmt in self.formats:
            static = _STATIC_BY_TEXT.get(fmt)
            if static is None and fmt[:1] == "0" and _number(fmt):  # "00" is payload type 0 too
                static = _STATIC_NAMES.get(int(fmt))
            if static is not None:
                result[fmt] = static
        for key, value in self.attributes:
            if key != "rtpmap" or value is None:
                continue
            pt, _, encoding = value.partition(" ")
            name, _, rest = encoding.strip().partition("/")
            rate = rest.split("/")[0]
            result[pt] = (name, int(rate) if _number(rate) else 8000)
        return result

    def lines(self) -> list[str]:
        out = [f"m={self.media} {self.port} {self.proto} {' '.join(self.formats)}".rstrip()]
        if not self.other:  # the usual section (m=, c=, a= only): no sorting, no empty comprehensions
            if self.connection is not None:
                out.append(f"c={self.connection}")
        else:
            grouped = sorted(self.other, key=lambda kv: _MEDIA_ORDER.index(kv[0]))
            out += [f"{k}={v}" for k, v in grouped if k == "i"]
            if self.connection is not None:
                out.append(f"c={self.connection}")
            out += [f"{k}={v}" for k, v in grouped if k != "i"]
        out += _attribute_lines(self.attributes)
        return out


def _attribute_lines(attributes: tuple[tuple[str, str | None], ...]) -> list[str]:
    """The ``a=`` lines of ``attributes``, remembered: answers to the same offer carry the same attributes (see
    answer_offer), and so do the offers a node makes."""
    lines = _ATTRIBUTE_LINES.get(attributes)
    if lines is None:
        lines = [f"a={k}" if v is None else f"a={k}:{v}" for k, v in attributes]
        remember(_ATTRIBUTE_LINES, attributes, lines, 256)
    return lines


_ATTRIBUTE_LINES: dict[tuple[tuple[str, str | None], ...], list[str]] = {}


@quick_init
@dataclass(frozen=True, slots=True)
class SessionDescription(TextOnce):
    """A whole SDP body (RFC 4566 §5). ``str()`` ends every line with CRLF."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: tuple[str, ...] = ("0 0",)
    attributes: tuple[tuple[str, str | None], ...] = ()
    media: tuple[MediaSection, ...] = ()
    other: tuple[tuple[str, str], ...] = ()  # i= u= e= p= b= r= z= k= lines, kept verbatim
    _text: str | None = field(default=None, init=False, repr=False, compare=False)  # str(), made once

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise SdpParseError("SDP is not UTF-8") from None
        cached = _PARSED.get(text)
        if cached is not None:
            return cached
        sdp = cls._parse(text)
        remember(_PARSED, text, sdp, _PARSED_MAX)
        return sdp

    @classmethod
    def _parse(cls, text: str) -> SessionDescription:
        origin: Origin | None = None
        name = "-"
        connection: Connection | None = None
        times: list[str] = []
        attributes: list[tuple[str, str | None]] = []
        other: list[tuple[str, str]] = []
        media: list[MediaSection] = []
        current: _SectionBuilder | None = None
        seen_version = False

        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise SdpParseError(f"bad SDP line: {line[:40]!r}")
            kind, value = line[0], line[2:]
            if not seen_version:
                if kind != "v" or value.strip() != "0":
                    raise SdpParseError("SDP must start with v=0")
                seen_version = True
                continue
            if kind == "m":
                if current is not None:
                    media.append(current.build())
                current = _SectionBuilder(value)
            elif current is not None:
                if kind == "c":
                    current.connection = Connection.parse(value)
                elif kind == "a":
                    current.attributes.append(_attribute(value))
                elif kind in "ibk":
                    current.other.append((kind, value))
                else:
                    raise SdpParseError(f"unexpected {kind}= line in a media section")
            elif kind == "o":
                origin = Origin.parse(value)
            elif kind == "s":
                name = value
            elif kind == "c":
                connection = Connection.parse(value)
            elif kind == "t":
                times.append(value)
            elif kind == "a":
                attributes.append(_attribute(value))
            elif kind in "iuepbrzk":
                other.append((kind, value))
            else:
                raise SdpParseError(f"unknown SDP line type {kind!r}")
        if current is not None:
            media.append(current.build())
        if not seen_version:
            raise SdpParseError("empty SDP")
        if origin is None:
            raise SdpParseError("SDP without o= line")
        return cls(origin, name, connection, tuple(times) or ("0 0",), tuple(attributes), tuple(media), tuple(other))

    def _format(self) -> str:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        ranked = sorted(self.other, key=lambda kv: _SESSION_ORDER.index(kv[0])) if self.other else ()
        if ranked:
            lines += [f"{k}={v}" for k, v in ranked if k in "iuep"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        if ranked:
            lines += [f"{k}={v}" for k, v in ranked if k == "b"]
        for t in self.times:
            lines.append(f"t={t}")
            # r= lines belong after their t= line; we only keep them for the (usual) single-t case.
        if ranked:
            lines += [f"{k}={v}" for k, v in ranked if k in "rzk"]
        if self.attributes:
            lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for section in self.media:
            lines += section.lines()
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    def audio(self) -> MediaSection | None:
        """The first audio section, whatever its port."""
        for section in self.media:
            if section.media == "audio":
                return section
        return None

    def with_version(self, version: int) -> SessionDescription:
        """The same description with ``o=`` version set (RFC 3264 §8: each new offer increments it)."""
        return replace(self, origin=replace(self.origin, version=version))


# The same text is often parsed twice: the UA parses an INVITE's offer and hands its text (``IncomingCall.sdp``) to the
# engine, which parses it again to answer. Values are immutable, so recent parses are memoised; FIFO-bounded, so junk
# cannot grow it (a parse error is not remembered).
_PARSED_MAX = 256
_PARSED: dict[str, SessionDescription] = {}


def _number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts e.g. superscripts, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    return (name.strip(), rest if sep else None)


class _SectionBuilder:
    """Collects the lines of one m= section while parsing."""

    def __init__(self, m_line: str) -> None:
        self.m_line = m_line
        self.connection: Connection | None = None
        self.attributes: list[tuple[str, str | None]] = []
        self.other: list[tuple[str, str]] = []

    def build(self) -> MediaSection:
        fields = self.m_line.split()
        if len(fields) < 3:
            raise SdpParseError(f"bad m= line: {self.m_line!r}")
        port_text = fields[1].split("/")[0]
        if not _number(port_text) or int(port_text) > 65535:
            raise SdpParseError(f"bad m= port: {fields[1]!r}")
        return MediaSection(
            media=fields[0],
            port=int(port_text),
            proto=fields[2],
            formats=tuple(fields[3:]),
            connection=self.connection,
            attributes=tuple(self.attributes),
            other=tuple(self.other),
        )


# ---------------------------------------------------------------------------------------------------------------------
# Offer / answer


@quick_init
@dataclass(frozen=True, slots=True)
class MediaDescription:
    """What the media layer needs to know about the remote side of one call leg.

    ``direction`` is the remote party's attribute as written in its SDP (``sendonly`` from the peer means it is putting
    us on hold). ``held`` is true for ``sendonly``/``inactive`` and for the legacy ``c=0.0.0.0`` form (RFC 3264 §8.4).
    """

    address: str
    port: int
    payload_type: int
    codec: str
    clock_rate: int
    telephone_event_pt: int | None
    direction: Direction
    ptime: int

    @property
    def held(self) -> bool:
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::")


def mirror_direction(offered: Direction) -> Direction:
    """RFC 3264 §6.1: the answer's direction for an offered one (sendonly <-> recvonly)."""
    return _MIRROR.get(offered, offered)


_MIRROR: dict[str, Direction] = {
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "sendrecv": "sendrecv",
    "inactive": "inactive",
}


def _intersect(a: Direction, b: Direction) -> Direction:
    """The most permissive direction both sides allow."""
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    if recv:
        return "recvonly"
    return "inactive"


def build_offer(
    address: str,
    port: int,
    *,
    session_id: str,
    version: int = 1,
    codecs: tuple[str, ...] = ("PCMU", "PCMA"),
    telephone_event_pt: int | None = 101,
    ptime: int = 20,
    direction: Direction = "sendrecv",
    username: str = "callplane",
) -> SessionDescription:
    """An audio offer (RFC 3264 §5) with static G.711 payload types and RFC 4733 events ``0-15``."""
    formats = [str(AUDIO_CODECS[name]) for name in codecs]
    attributes: list[tuple[str, str | None]] = [("rtpmap", f"{AUDIO_CODECS[name]} {name}/8000") for name in codecs]
    if telephone_event_pt is not None:
        formats.append(str(telephone_event_pt))
        attributes.append(("rtpmap", f"{telephone_event_pt} {_TELEPHONE_EVENT}/8000"))
        attributes.append(("fmtp", f"{telephone_event_pt} 0-15"))
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    conn = Connection.for_address(address)
    return SessionDescription(
        origin=Origin(username, session_id, version, address, "IN", conn.addrtype),
        session_name="callplane",
        connection=conn,
        media=(MediaSection("audio", port, "RTP/AVP", tuple(formats), None, tuple(attributes)),),
    )


def _section_direction(sdp: SessionDescription, section: MediaSection) -> Direction:
    """Media-level attribute wins over session-level; the default is sendrecv (RFC 4566 §6)."""
    if section.direction is not None:
        return section.direction
    for key, _ in sdp.attributes:
        if key in _DIRECTIONS:
            return key
    return "sendrecv"


def _section_address(sdp: SessionDescription, section: MediaSection) -> str:
    conn = section.connection or sdp.connection
    if conn is None:
        raise SdpParseError("media section without c= address")
    return conn.address


def _choose(section: MediaSection, supported: tuple[str, ...]) -> tuple[str, str, int, str | None]:
    """(payload type, codec name, clock rate, telephone-event pt) for the first supported codec in the peer's order."""
    memo = section._choices
    if memo is None:
        memo = {}
        object.__setattr__(section, "_choices", memo)
    if supported in memo:
        chosen = memo[supported]
    else:
        try:
            chosen = _choose_codec(section, supported)
        except NegotiationError:
            chosen = None
        if len(memo) < 8:
            memo[supported] = chosen
    if chosen is None:
        raise NegotiationError("no common audio codec")
    return chosen


def _choose_codec(section: MediaSection, supported: tuple[str, ...]) -> tuple[str, str, int, str | None]:
    names = section.rtpmap()
    upper = tuple(s.upper() for s in supported)
    codec: tuple[str, str, int] | None = None
    event_pt: str | None = None
    for fmt in section.formats:
        if not _number(fmt) or int(fmt) > 127:  # RTP payload types are 7 bits (RFC 3550 §5.1)
            continue
        name, rate = names.get(fmt, ("", 0))
        if codec is None and name.upper() in upper and rate == 8000:
            codec = (fmt, name.upper(), rate)
        if event_pt is None and name.lower() == _TELEPHONE_EVENT and rate == 8000:
            event_pt = fmt
    if codec is None:
        raise NegotiationError("no common audio codec")
    return codec[0], codec[1], codec[2], event_pt


def answer_offer(
    offer: SessionDescription,
    address: str,
    port: int,
    *,
    session_id: str,
    version: int = 1,
    supported: tuple[str, ...] = ("PCMU", "PCMA"),
    ptime: int = 20,
    direction: Direction = "sendrecv",
    username: str = "callplane",
) -> SessionDescription:
    """Answer ``offer`` (RFC 3264 §6): one m= line per offered one, the first usable audio stream accepted.

    The accepted stream carries the first common codec in the offerer's order and the offer's telephone-event payload
    type; its direction mirrors the offer's (§6.1), narrowed by ``direction`` (what we want locally). Every other
    stream is refused with port 0. Raises :class:`NegotiationError` (488) when no audio stream is acceptable.
    """
    sections: list[MediaSection] = []
    accepted = False
    for section in offer.media:
        usable = section.media == "audio" and section.port != 0 and section.proto.upper() == "RTP/AVP"
        chosen = None
        if usable and not accepted:
            try:
                chosen = _choose(section, supported)
            except NegotiationError:
                chosen = None
        if chosen is None:
            sections.append(MediaSection(section.media, 0, section.proto, section.formats[:1] or ("0",)))
            continue
        accepted = True
        wanted = _intersect(_MIRROR[_section_direction(offer, section)], direction)
        formats, attributes = _answer_lines(chosen, ptime, wanted)
        sections.append(MediaSection("audio", port, section.proto, formats, None, attributes))
    if not accepted:
        raise NegotiationError("no acceptable audio stream in the offer")
    conn = Connection.for_address(address)
    return SessionDescription(
        origin=Origin(username, session_id, version, address, "IN", conn.addrtype),
        session_name="callplane",
        connection=conn,
        media=tuple(sections),
    )


def _answer_lines(
    chosen: tuple[str, str, int, str | None], ptime: int, direction: Direction
) -> tuple[tuple[str, ...], tuple[tuple[str, str | None], ...]]:
    """The formats and attributes of an accepted stream, remembered: every answer to the same offer has the same."""
    key = (chosen, ptime, direction)
    known = _ANSWER_LINES.get(key)
    if known is None:
        pt, name, rate, event_pt = chosen
        formats = [pt]
        attributes: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {name}/{rate}")]
        if event_pt is not None:
            formats.append(event_pt)
            attributes.append(("rtpmap", f"{event_pt} {_TELEPHONE_EVENT}/8000"))
            attributes.append(("fmtp", f"{event_pt} 0-15"))
        attributes.append(("ptime", str(ptime)))
        attributes.append((direction, None))
        known = (tuple(formats), tuple(attributes))
        remember(_ANSWER_LINES, key, known, 256)
    return known


_ANSWER_LINES: dict[
    tuple[tuple[str, str, int, str | None], int, Direction],
    tuple[tuple[str, ...], tuple[tuple[str, str | None], ...]],
] = {}


def refuse_offer(offer: SessionDescription, address: str, *, session_id: str) -> SessionDescription:
    """An answer that rejects every stream of ``offer`` (port 0, RFC 3264 §6): the valid answer a UAC must put in the
    ACK of a 2xx whose offer it cannot accept, before it sends BYE (RFC 3261 §13.2.2.4)."""
    conn = Connection.for_address(address)
    return SessionDescription(
        origin=Origin("callplane", session_id, 1, address, "IN", conn.addrtype),
        session_name="callplane",
        connection=conn,
        media=tuple(MediaSection(s.media, 0, s.proto, s.formats[:1] or ("0",)) for s in offer.media),
    )


def change_direction(sdp: SessionDescription, direction: Direction) -> SessionDescription:
    """The same local description with a new direction on its audio stream and ``o=`` version + 1.

    This is how hold (``sendonly``, or ``inactive`` when the peer already holds us) and resume (``sendrecv``) offers are
    made for a re-INVITE (RFC 3264 §8.4).
    """
    sections = []
    for section in sdp.media:
        if section.media == "audio" and section.port != 0:
            kept = tuple((k, v) for k, v in section.attributes if k not in _DIRECTIONS)
            section = replace(section, attributes=kept + ((direction, None),))
        sections.append(section)
    attrs = tuple((k, v) for k, v in sdp.attributes if k not in _DIRECTIONS)
    return replace(
        sdp,
        attributes=attrs,
        media=tuple(sections),
        origin=replace(sdp.origin, version=sdp.origin.version + 1),
    )


def describe(sdp: SessionDescription, supported: tuple[str, ...] = ("PCMU", "PCMA")) -> MediaDescription:
    """The remote audio stream of ``sdp`` as a :class:`MediaDescription` (first usable audio section).

    Used on the peer's answer (UAC side) and on the peer's offer after :func:`answer_offer` accepted it (UAS side): in
    both cases the codec is the first supported one in the peer's list, which is what the answer carries.
    """
    # An offer is described twice (by the UA for IncomingCall, by the engine's media session), and a remembered parse
    # (see _PARSED) once per call: recent results are kept by the description's identity (the entry holds it alive).
    key = (id(sdp), supported)
    known = _DESCRIBED.get(key)
    if known is not None and known[0] is sdp:
        return known[1]
    media = _describe(sdp, supported)
    remember(_DESCRIBED, key, (sdp, media), _PARSED_MAX)
    return media


_DESCRIBED: dict[tuple[int, tuple[str, ...]], tuple[SessionDescription, MediaDescription]] = {}


def _describe(sdp: SessionDescription, supported: tuple[str, ...]) -> MediaDescription:
    for section in sdp.media:
        if section.media != "audio" or section.port == 0:
            continue
        try:
            pt, name, rate, event_pt = _choose(section, supported)
        except NegotiationError:
            continue
        ptime_text = section.attribute("ptime") or ""
        try:
            ptime = int(float(ptime_text)) if ptime_text else 20
        except ValueError:
            ptime = 20
        return MediaDescription(
            address=_section_address(sdp, section),
            port=section.port,
            payload_type=int(pt),
            codec=name,
            clock_rate=rate,
            telephone_event_pt=int(event_pt) if event_pt is not None and _number(event_pt) else None,
            direction=_section_direction(sdp, section),
            ptime=ptime if ptime > 0 else 20,
        )
    raise NegotiationError("no usable audio stream")


def is_hold(sdp: SessionDescription) -> bool:
    """True when the remote description puts us on hold (sendonly/inactive, or ``c=0.0.0.0``: RFC 3264 §8.4)."""
    try:
        return describe(sdp).held
    except NegotiationError:
        return False
