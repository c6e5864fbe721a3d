from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callplane.media import g711
from callplane.media.rtp import RtpPacket, RtpParseError, build, is_rtcp, seq_diff
from tests.media.pcapfile import SIPP, udp_payloads


def test_sipp_g711a_capture_round_trips() -> None:
    payloads = udp_payloads(SIPP / "g711a.pcap")
    assert len(payloads) > 100
    packets = [RtpPacket.parse(raw) for raw in payloads]
    assert [bytes(p) for p in packets] == payloads
    assert {p.payload_type for p in packets} == {g711.PCMA}
    assert {len(p.payload) for p in packets} == {240}  # this capture uses ptime 30
    assert all(seq_diff(b.sequence, a.sequence) == 1 for a, b in zip(packets, packets[1:], strict=False))
    assert all(b.timestamp - a.timestamp == 240 for a, b in zip(packets, packets[1:], strict=False))


def test_sipp_dtmf_capture_fields() -> None:
    first = RtpPacket.parse(udp_payloads(SIPP / "dtmf_2833_1.pcap")[0])
    assert first.payload_type == 101
    assert first.payload[0] == 1  # event "1"
    assert bytes(first) == udp_payloads(SIPP / "dtmf_2833_1.pcap")[0]


def test_build_matches_dataclass() -> None:
    raw = build(0, 65535, 0xFFFFFFFF, 0x01020304, b"\xff" * 160, marker=True)
    assert raw[:12] == bytes.fromhex("80 80 ff ff ff ff ff ff 01 02 03 04")
    assert RtpPacket.parse(raw) == RtpPacket(0, 65535, 0xFFFFFFFF, 0x01020304, b"\xff" * 160, True)


def test_csrc_extension_and_padding() -> None:
    p = RtpPacket(8, 7, 1000, 42, b"abc", False, (1, 2), (0xBEDE, b"\x10\x20\x30\x40"))
    raw = bytes(p)
    assert raw[0] == 0x80 | 0x10 | 2
    assert RtpPacket.parse(raw) == p
    padded = bytearray(raw + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    assert RtpPacket.parse(bytes(padded)) == p


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x80\x00", "shorter than 12"),
        (b"\x40" + bytes(11), "version"),
        (b"\x81" + bytes(11), "CSRC"),
        (b"\x90" + bytes(11), "extension"),
        (b"\xa0" + bytes(11) + b"\x05", "padding"),
    ],
)
def test_parse_errors(raw: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        RtpPacket.parse(raw)


def test_rtcp_demux_and_seq_diff() -> None:
    assert is_rtcp(bytes.fromhex("80c8 0006"))
    assert not is_rtcp(build(0, 1, 1, 1, b""))
    assert not is_rtcp(build(0, 1, 1, 1, b"", marker=True))
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 90) == 10


@given(
    st.integers(0, 127),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=200),
    st.booleans(),
)
def test_round_trip_property(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool) -> None:
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker)
    assert RtpPacket.parse(bytes(p)) == p
