"""RTCP (RFC 3550 §6): sender/receiver reports, SDES CNAME and BYE, compound packets, reception statistics.

Legs send one compound packet (SR or RR, then SDES CNAME, RFC 3550 §6.1) every few seconds: the configured
interval (5 s) times a random factor in [0.5, 1.5) (§6.3.1). The bandwidth-scaled interval and timer
reconsideration of §6.3 are not needed at one or two participants per session. Telephone-event packets count as
received but stay out of the interarrival jitter (all packets of an event carry the event's start timestamp).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callplane.core.errors import MediaError

SR = 200
RR = 201
SDES = 202
BYE = 203
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

_HDR = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IB3sIIII")

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpParseError",
    "Sdes",
    "SenderReport",
    "build_compound",
    "ntp_timestamp",
    "parse_compound",
]


class RtcpParseError(MediaError, ValueError):
    """The datagram is not a well-formed RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block."""

    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256
    cumulative_lost: int  # signed 24 bit
    highest_seq: int  # extended highest sequence number received
    jitter: int  # in timestamp units
    lsr: int = 0
    dlsr: int = 0

    def __bytes__(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc, self.fraction_lost, lost.to_bytes(3, "big"), self.highest_seq, self.jitter, self.lsr, self.dlsr
        )

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, frac, lost3, hi, jit, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost = int.from_bytes(lost3, "big")
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, frac, lost, hi, jit, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RFC 3550 §6.4.1."""

    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = struct.pack("!IQIII", self.ssrc, self.ntp, self.rtp_timestamp, self.packet_count, self.octet_count)
        body += b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), SR, body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RFC 3550 §6.4.2."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), RR, body)


@dataclass(frozen=True, slots=True)
class Sdes:
    """RFC 3550 §6.5, one chunk carrying only the CNAME item (the only mandatory one)."""

    ssrc: int
    cname: str

    def __bytes__(self) -> bytes:
        name = self.cname.encode()[:255]
        chunk = struct.pack("!IBB", self.ssrc, 1, len(name)) + name + b"\x00"
        chunk += b"\x00" * (-len(chunk) % 4)
        return _header(1, SDES, chunk)


@dataclass(frozen=True, slots=True)
class Bye:
    """RFC 3550 §6.6."""

    ssrcs: tuple[int, ...]
    reason: str = ""

    def __bytes__(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason:
            r = self.reason.encode()[:255]
            body += bytes([len(r)]) + r
            body += b"\x00" * (-len(body) % 4)
        return _header(len(self.ssrcs), BYE, body)


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye


def _header(count: int, ptype: int, body: bytes) -> bytes:
    return _HDR.pack(0x80 | count, ptype, len(body) // 4) + body


def build_compound(*packets: RtcpPacket) -> bytes:
    return b"".join(bytes(p) for p in packets)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse every packet of a compound RTCP datagram; unknown packet types (APP, XR...) are skipped."""
    out: list[RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise RtcpParseError("RTCP packet shorter than 4 bytes")
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpParseError("RTCP trailing bytes")
        b0, ptype, words = _HDR.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpParseError("RTCP version is not 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtcpParseError("RTCP length exceeds datagram")
        count = b0 & 0x1F
        body = data[pos + 4 : end]
        if b0 & 0x20 and body:
            body = body[: len(body) - body[-1]]
        if ptype == SR:
            if len(body) < 24 + 24 * count:
                raise RtcpParseError("RTCP SR truncated")
            ssrc, ntp, rtp_ts, pc, oc = struct.unpack_from("!IQIII", body)
            blocks = tuple(ReportBlock.parse(body, 24 + 24 * i) for i in range(count))
            out.append(SenderReport(ssrc, ntp, rtp_ts, pc, oc, blocks))
        elif ptype == RR:
            if len(body) < 4 + 24 * count:
                raise RtcpParseError("RTCP RR truncated")
            (ssrc,) = struct.unpack_from("!I", body)
            out.append(ReceiverReport(ssrc, tuple(ReportBlock.parse(body, 4 + 24 * i) for i in range(count))))
        elif ptype == SDES:
            out.extend(_parse_sdes(body, count))
        elif ptype == BYE:
            if len(body) < 4 * count:
                raise RtcpParseError("RTCP BYE truncated")
            ssrcs = struct.unpack_from(f"!{count}I", body)
            reason = ""
            rpos = 4 * count
            if rpos < len(body):
                n = body[rpos]
                reason = body[rpos + 1 : rpos + 1 + n].decode(errors="replace")
            out.append(Bye(tuple(ssrcs), reason))
        pos = end
    return out


def _parse_sdes(body: bytes, count: int) -> list[Sdes]:
    out: list[Sdes] = []
    pos = 0
    for _ in range(count):
        if len(body) < pos + 4:
            raise RtcpParseError("RTCP SDES truncated")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        cname = ""
        while pos < len(body) and body[pos] != 0:
            if pos + 2 > len(body):
                raise RtcpParseError("RTCP SDES item truncated")
            kind, n = body[pos], body[pos + 1]
            if kind == 1:
                cname = body[pos + 2 : pos + 2 + n].decode(errors="replace")
            pos += 2 + n
        pos += 4 - pos % 4  # the null terminator plus padding to the next 32-bit boundary
        out.append(Sdes(ssrc, cname))
    return out


def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time."""
    secs = int(unix_seconds)
    frac = int((unix_seconds - secs) * (1 << 32)) & 0xFFFFFFFF
    return ((secs + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32 | frac


class ReceptionStats:
    """Per-source receive counters for report blocks (RFC 3550 §6.4.1 and Appendix A.1, A.3, A.8)."""

    __slots__ = (
        "_expected_prior",
        "_received_prior",
        "_transit",
        "base_seq",
        "cycles",
        "jitter",
        "last_sr",
        "last_sr_at",
        "max_seq",
        "received",
        "ssrc",
    )

    def __init__(self, ssrc: int, first_seq: int) -> None:
        self.ssrc = ssrc
        self.base_seq = first_seq
        self.max_seq = first_seq
        self.cycles = 0
        self.received = 0
        self.jitter = 0.0
        self._transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self.last_sr = 0  # middle 32 bits of the last SR's NTP timestamp
        self.last_sr_at: float | None = None

    def update(self, seq: int, rtp_ts: int, now: float, timing: bool = True, clock_rate: int = 8000) -> None:
        """Count a received packet; with ``timing`` its arrival also feeds the jitter estimate (A.8)."""
        # Once per packet received: seq_diff(seq, max_seq) > 0 inline, attributes read once.
        max_seq = self.max_seq
        if 0 < (seq - max_seq) & 0xFFFF < 0x8000:
            if seq < max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        self.received += 1
        if not timing:
            return
        transit = now * clock_rate - rtp_ts
        last = self._transit
        if last is not None:
            delta = abs(transit - last)
            if delta < 1 << 30:  # ignore timestamp jumps (new talkspurt from a restarted sender)
                self.jitter += (delta - self.jitter) / 16
        self._transit = transit

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def report_block(self, now: float) -> ReportBlock:
        expected = self.expected
        exp_int = expected - self._expected_prior
        rec_int = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_int = exp_int - rec_int
        fraction = 0 if exp_int <= 0 or lost_int <= 0 else min(255, (lost_int << 8) // exp_int)
        lost = max(-0x800000, min(0x7FFFFF, self.lost))
        dlsr = 0 if self.last_sr_at is None else int((now - self.last_sr_at) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            self.ssrc, fraction, lost, self.extended_max & 0xFFFFFFFF, int(self.jitter), self.last_sr, dlsr
        )
