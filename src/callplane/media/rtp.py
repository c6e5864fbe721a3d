"""RTP packets (RFC 3550 §5.1): a frozen dataclass that parses and serialises, plus a fast header builder.

The ticker builds hundreds of headers per tick, so :func:`build` packs a fixed 12-byte header with one
precompiled ``struct``; :class:`RtpPacket` is the general form (CSRCs, header extension, padding) for parsing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callplane.core.errors import MediaError

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")

__all__ = ["RTP_VERSION", "RtpPacket", "RtpParseError", "build", "is_rtcp", "seq_diff"]


class RtpParseError(MediaError, ValueError):
    """The datagram is not a well-formed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; ``payload`` excludes padding (RFC 3550 §5.1)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined id, data whose length is a multiple of 4)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RtpParseError("RTP packet shorter than 12 bytes")
        b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError("RTP version is not 2")
        pos = 12
        cc = b0 & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpParseError("RTP CSRC list truncated")
        csrc = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        extension = None
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpParseError("RTP header extension truncated")
            profile, words = _EXT.unpack_from(data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpParseError("RTP header extension truncated")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or end - pad < pos:
                raise RtpParseError("RTP padding length is invalid")
            end -= pad
        return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[pos:end]), bool(b1 & 0x80), tuple(csrc), extension)

    def __bytes__(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.extension is not None:
            b0 |= 0x10
        out = HEADER.pack(
            b0, (0x80 if self.marker else 0) | self.payload_type, self.sequence, self.timestamp, self.ssrc
        )
        if self.csrc:
            out += struct.pack(f"!{len(self.csrc)}I", *self.csrc)
        if self.extension is not None:
            profile, ext = self.extension
            if len(ext) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4")
            out += _EXT.pack(profile, len(ext) // 4) + ext
        return out + self.payload


def build(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    """A plain RTP packet (no CSRC, no extension) in one ``struct.pack``: the per-tick fast path."""
    return HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc) + payload


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing: RTCP packet types 192..223 sit where RTP has marker+PT."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers with wraparound, in -32768..32767 (RFC 3550 §A.1)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000
