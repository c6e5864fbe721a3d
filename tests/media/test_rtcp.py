from __future__ import annotations

import pytest

from callplane.media.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpParseError,
    Sdes,
    SenderReport,
    build_compound,
    ntp_timestamp,
    parse_compound,
)

# An SR + SDES compound packet as a real stack writes it (hand-checked against RFC 3550 §6.4.1 and §6.5).
SR_SDES = bytes.fromhex(
    "81c8000c"  # V=2 RC=1 PT=200 length=12
    "11223344"  # SSRC
    "e6b8a6c0 80000000"  # NTP 2022-...: seconds, half a second
    "00000fa0 0000000a 00000640"  # RTP ts 4000, 10 packets, 1600 octets
    "55667788 05 fffffe 00010064 00000007 a6c08000 00008000"  # report block, cumulative lost -2
    "81ca0004"  # SDES, 1 chunk, length 4
    "11223344 0108 63616c6c706c616e 0000"  # CNAME "callplan", terminator + pad
)


def test_parse_sender_report_and_sdes() -> None:
    sr, sdes = parse_compound(SR_SDES)
    assert sr == SenderReport(
        0x11223344,
        0xE6B8A6C080000000,
        4000,
        10,
        1600,
        (ReportBlock(0x55667788, 5, -2, 0x10064, 7, 0xA6C08000, 0x8000),),
    )
    assert sdes == Sdes(0x11223344, "callplan")
    assert build_compound(sr, sdes) == SR_SDES


def test_rr_and_bye_round_trip() -> None:
    rr = ReceiverReport(1, (ReportBlock(2, 0, 0, 5, 0),))
    bye = Bye((1, 2), "done")
    raw = build_compound(rr, Sdes(1, "x@y"), bye)
    assert parse_compound(raw) == [rr, Sdes(1, "x@y"), bye]
    assert len(raw) % 4 == 0


def test_parse_errors() -> None:
    with pytest.raises(RtcpParseError):
        parse_compound(b"\x81\xc8")
    with pytest.raises(RtcpParseError, match="exceeds"):
        parse_compound(bytes.fromhex("81c80010 11223344"))


def test_ntp_timestamp() -> None:
    assert ntp_timestamp(0.5) == (2208988800 << 32) | 0x80000000


def test_reception_stats_loss_and_wrap() -> None:
    st = ReceptionStats(9, 65534)
    for i, seq in enumerate([65534, 65535, 1, 2]):  # seq 0 lost across the wrap
        st.update(seq, 160 * i, now=0.02 * i)
    assert st.extended_max == 65536 + 2
    assert st.expected == 5 and st.received == 4 and st.lost == 1
    block = st.report_block(now=1.0)
    assert block.cumulative_lost == 1
    assert block.fraction_lost == 256 // 5
    assert block.highest_seq == 65538
    assert st.report_block(now=2.0).fraction_lost == 0  # no new loss in the next interval
