from __future__ import annotations

import pytest

from callplane.core.ids import IdSource
from callplane.media.dtmf import TelephoneEvent
from callplane.media.leg import RtpLeg
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
from callplane.media.rtp import RtpPacket, build
from callplane.media.sources import PcmSource

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


# -- what a leg reports ------------------------------------------------------------------------------------------

PEER = ("127.0.0.1", 40000)


def _sr(leg: RtpLeg, now: float) -> SenderReport:
    sr = parse_compound(leg.rtcp_report(now))[0]
    assert isinstance(sr, SenderReport)
    return sr


def test_sender_report_carries_the_rtp_timestamp_of_its_own_instant() -> None:
    leg = RtpLeg("L1", IdSource(3), remote=PEER, start=0.0, wall_offset=1000.0)
    leg.source = PcmSource(bytes(320 * 100))
    ts0 = RtpPacket.parse(leg.produce(0.0, 0) or b"").timestamp
    for n in range(1, 3):
        leg.produce(n * 0.02, n)
    leg.sending = False  # nothing sent for a while: the last packet's timestamp is 7 s old
    for n in range(3, 375):
        leg.produce(n * 0.02, n)
    sr = _sr(leg, 7.5)
    assert sr.ntp == ntp_timestamp(1007.5)
    assert sr.rtp_timestamp == (ts0 + 60000) & 0xFFFFFFFF  # 7.5 s at 8 kHz after the first tick
    # During a telephone event every packet carries the event's start timestamp; the report does not.
    leg.sending = True
    leg.send_digits("1")
    pkts = [RtpPacket.parse(leg.produce(n * 0.02, n) or b"") for n in range(375, 380)]
    assert {p.timestamp for p in pkts} == {(ts0 + 375 * 160) & 0xFFFFFFFF}
    assert _sr(leg, 380 * 0.02).rtp_timestamp == (ts0 + 380 * 160) & 0xFFFFFFFF


def test_report_interval_is_randomised_between_half_and_one_and_a_half_intervals() -> None:
    leg = RtpLeg("L1", IdSource(4), remote=PEER, start=100.0, rtcp_interval=5.0)
    assert 100.0 + 1.25 <= leg.next_rtcp < 100.0 + 3.75  # the first one after half an interval
    gaps = []
    now = leg.next_rtcp
    for _ in range(200):
        assert leg.rtcp_due(now) is not None
        gaps.append(leg.next_rtcp - now)
        assert leg.rtcp_due(leg.next_rtcp - 1e-6) is None
        now = leg.next_rtcp
    assert all(2.5 <= g < 7.5 for g in gaps)
    assert min(gaps) < 2.7 and max(gaps) > 7.3 and 4.7 < sum(gaps) / len(gaps) < 5.3
    # Two legs started together drift apart at once.
    ids = IdSource(4)
    a, b = (RtpLeg(x, ids, remote=PEER, start=0.0) for x in "ab")
    assert a.next_rtcp != b.next_rtcp


def test_each_leg_has_its_own_cname() -> None:
    ids = IdSource(5)
    a, b = RtpLeg("a", ids, remote=PEER), RtpLeg("b", ids, remote=PEER)
    assert a.cname != b.cname and len(a.cname) == len(b.cname) == 24  # 96 random bits (RFC 7022 §4.2)
    assert parse_compound(a.rtcp_report(1.0))[1] == Sdes(a.ssrc, a.cname)
    assert RtpLeg("c", ids, cname="user@example.com").cname == "user@example.com"


def test_telephone_events_stay_out_of_the_jitter_estimate() -> None:
    leg = RtpLeg("L1", IdSource(3), remote=PEER)
    seq = 0
    for k in range(40):  # audio on a perfect 20 ms schedule, an RFC 4733 event in the same stream from k = 10
        now = k * 0.02
        leg.receive_rtp(build(0, seq, 160 * k, 9, b"\xff" * 160), PEER, now)
        seq += 1
        if 10 <= k < 20:
            leg.receive_rtp(build(101, seq, 1600, 9, bytes(TelephoneEvent(1, k >= 17, 10, 160 * (k - 9)))), PEER, now)
            seq += 1
    block = leg.stats.report_block(1.0) if leg.stats is not None else None
    assert block is not None
    assert (block.jitter, block.cumulative_lost, block.highest_seq) == (0, 0, 49)
