from __future__ import annotations

from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.dtmf import TelephoneEvent
from callplane.media.events import (
    DigitReceived,
    DigitsSent,
    LegIdle,
    RecordingFinished,
    RemoteLatched,
    SourceFinished,
)
from callplane.media.leg import RtpLeg
from callplane.media.recorder import Recorder
from callplane.media.rtcp import ReceiverReport, Sdes, SenderReport, parse_compound
from callplane.media.rtp import RtpPacket, build
from callplane.media.sources import SILENCE, PcmSource, ToneSource

PEER = ("127.0.0.1", 40000)


def make(**kw: object) -> RtpLeg:
    return RtpLeg("L1", IdSource(3), remote=PEER, **kw)  # type: ignore[arg-type]


def test_send_sequence_timestamp_marker_and_codec() -> None:
    leg = make(payload_type=g711.PCMA)
    leg.source = ToneSource([1000], 0.06)
    pkts = [RtpPacket.parse(p) for n in range(10, 14) if (p := leg.produce(n * 0.02, n))]
    assert [p.sequence - pkts[0].sequence for p in pkts] == [0, 1, 2, 3]
    assert [p.timestamp - pkts[0].timestamp for p in pkts] == [0, 160, 320, 480]
    assert [p.marker for p in pkts] == [True, False, False, False]
    assert {p.ssrc for p in pkts} == {leg.ssrc}
    tone = ToneSource([1000], 0.06)
    assert [p.payload for p in pkts[:3]] == [g711.encode(tone.read() or b"", g711.PCMA) for _ in range(3)]
    assert pkts[3].payload == g711.encode(SILENCE, g711.PCMA)  # source finished: silence keeps flowing
    assert leg.events == [SourceFinished("L1")]


def test_skipped_ticks_advance_timestamp_and_hold_sets_marker() -> None:
    leg = make()
    a = RtpPacket.parse(leg.produce(0.0, 0) or b"")
    b = RtpPacket.parse(leg.produce(0.1, 5) or b"")  # the ticker skipped ticks 1..4
    assert b.timestamp - a.timestamp == 5 * 160 and b.sequence - a.sequence == 1
    leg.held = True
    assert leg.produce(0.12, 6) is None
    leg.held = False
    c = RtpPacket.parse(leg.produce(0.14, 7) or b"")
    assert c.marker and c.timestamp - a.timestamp == 7 * 160 and c.sequence - a.sequence == 2


def test_latching_to_the_real_source() -> None:
    leg = make()
    real = ("127.0.0.1", 41234)
    leg.receive_rtp(build(0, 1, 160, 99, b"\xff" * 160), real, 0.0)
    assert leg.remote == real and leg.remote_rtcp == ("127.0.0.1", 41235)
    assert leg.events == [RemoteLatched("L1", "127.0.0.1", 41234)]
    leg.receive_rtp(build(0, 2, 320, 99, b"\xff" * 160), ("127.0.0.1", 5), 0.02)  # spoofed: ignored
    assert leg.remote == real
    leg.receive_rtp(build(0, 900, 0, 100, b"\xff" * 160), ("127.0.0.1", 6), 0.04)  # new SSRC: relatch
    assert leg.remote == ("127.0.0.1", 6)


def test_inbound_audio_reaches_sinks_and_heard_in_order() -> None:
    leg = make()
    rec = Recorder()
    leg.add_sink(rec)
    frames = [bytes([0x10 + i]) * 160 for i in range(4)]
    for seq in (1, 0, 2, 3):  # reordered
        leg.receive_rtp(build(0, seq, seq * 160, 7, frames[seq]), PEER, 0.0)
    heard = []
    for n in range(5):
        leg.pull(n * 0.02)
        heard.append(leg.heard)
    assert heard == [g711.decode(f, 0) for f in frames] + [None]
    assert rec.pcm() == b"".join(g711.decode(f, 0) for f in frames) + SILENCE


def test_rfc4733_digits_finish_a_recording_on_key() -> None:
    leg = make()
    rec = Recorder(finish_on_key="#")
    leg.add_sink(rec)
    leg.pull(0.0)
    for dur, end in ((160, False), (320, True), (320, True), (320, True)):
        leg.receive_rtp(build(101, 5, 8000, 7, bytes(TelephoneEvent(11, end, 10, dur))), PEER, 0.1)
    assert DigitReceived("L1", "#", 40, "rfc4733") in leg.events
    assert RecordingFinished("L1", "key", 0.02, "#") in leg.events
    assert rec not in leg.sinks


def test_send_digits_through_the_leg_interrupts_audio() -> None:
    leg = make()
    leg.source = ToneSource([440], None)
    leg.send_digits("5")
    pkts = [RtpPacket.parse(leg.produce(n * 0.02, n) or b"") for n in range(10)]
    assert [p.payload_type for p in pkts] == [101] * 8 + [0, 0]
    assert [p.marker for p in pkts] == [True] + [False] * 9
    assert {p.timestamp for p in pkts[:8]} == {pkts[0].timestamp}
    assert pkts[8].timestamp == pkts[0].timestamp + 8 * 160
    assert [p.sequence - pkts[0].sequence for p in pkts] == list(range(10))
    assert leg.events == [DigitsSent("L1", "5")]


def test_idle_is_reported_once_until_rtp_returns() -> None:
    leg = make(idle_timeout=1.0, start=0.0)
    for n in range(49):
        leg.produce(n * 0.02, n)
    assert leg.events == []
    leg.produce(1.0, 50)
    leg.produce(1.02, 51)
    assert leg.events == [LegIdle("L1", 1.0)]
    leg.events.clear()
    leg.receive_rtp(build(0, 1, 160, 9, b"\xff" * 160), PEER, 1.5)
    leg.produce(2.49, 52)
    assert leg.events == []
    leg.produce(2.5, 53)
    assert leg.events == [LegIdle("L1", 1.0)]


def test_rtcp_rr_then_sr_with_reception_report() -> None:
    leg = make(rtcp_interval=5.0, start=0.0)
    first = leg.next_rtcp  # half an interval, randomised (tests/media/test_rtcp.py)
    assert leg.rtcp_due(first - 0.001) is None
    rr, sdes = parse_compound(leg.rtcp_due(first) or b"")
    assert rr == ReceiverReport(leg.ssrc, ()) and sdes == Sdes(leg.ssrc, leg.cname)
    leg.source = PcmSource(bytes(320 * 3))
    for n in range(3):
        leg.produce(n * 0.02, n)
    for seq in (10, 11, 13):
        leg.receive_rtp(build(0, seq, seq * 160, 77, b"\xff" * 160), PEER, 3.0)
    assert leg.rtcp_due(leg.next_rtcp - 0.001) is None
    sr, _ = parse_compound(leg.rtcp_due(leg.next_rtcp) or b"")
    assert isinstance(sr, SenderReport)
    assert (sr.packet_count, sr.octet_count) == (3, 480)
    block = sr.reports[0]
    assert (block.ssrc, block.cumulative_lost, block.highest_seq) == (77, 1, 13)
