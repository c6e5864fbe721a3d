from __future__ import annotations

import random

import pytest

from callplane.core.errors import MediaError
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
from callplane.media.leg import RtpLeg, ip_literal
from callplane.media.recorder import Recorder
from callplane.media.rtcp import ReceiverReport, Sdes, SenderReport, build_compound, parse_compound
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
    leg.sending = False
    assert leg.produce(0.12, 6) is None
    leg.sending = True
    c = RtpPacket.parse(leg.produce(0.14, 7) or b"")
    assert c.marker and c.timestamp - a.timestamp == 7 * 160 and c.sequence - a.sequence == 2


NAT = ("192.0.2.7", 31000)  # where the peer's RTP really comes from (behind NAT)
STRANGER = ("198.51.100.9", 5004)


def audio(seq: int, ssrc: int = 99) -> bytes:
    return build(0, seq, seq * 160, ssrc, b"\xff" * 160)


def digit_packets(event: int, ts: int, ssrc: int) -> list[bytes]:
    """One whole RFC 4733 digit: a start packet and three end packets."""
    start = build(101, 500, ts, ssrc, bytes(TelephoneEvent(event, False, 10, 160)))
    ends = [build(101, 501 + k, ts, ssrc, bytes(TelephoneEvent(event, True, 10, 800))) for k in range(3)]
    return [start, *ends]


def test_latches_to_the_first_source_inside_the_window_and_only_once() -> None:
    leg = make(start=0.0, latch_window=2.0)
    leg.add_sink(Recorder())  # someone listens: accepted audio is buffered
    leg.receive_rtp(audio(1), NAT, 0.5)
    assert leg.remote == NAT and leg.remote_rtcp == ("192.0.2.7", 31001)
    assert leg.events == [RemoteLatched("L1", *NAT)]
    leg.events.clear()
    # A stranger inside the same window, with its own SSRC: neither audio, digits nor the outbound stream move.
    leg.receive_rtp(audio(7, ssrc=0xBAD), STRANGER, 0.6)
    for pkt in digit_packets(1, 8000, 0xBAD):
        leg.receive_rtp(pkt, STRANGER, 0.7)
    assert leg.remote == NAT and leg.events == [] and leg.foreign_packets == 5
    assert leg.packets_received == 1 and len(leg.jitter) == 1
    leg.receive_rtp(audio(900, ssrc=100), NAT, 0.8)  # the peer restarts its stream (new SSRC): still accepted
    assert leg.packets_received == 2 and leg.remote == NAT and leg.remote_ssrc == 100


def test_after_the_window_only_the_sdp_address_is_accepted() -> None:
    leg = make(start=0.0, latch_window=2.0)
    for pkt in digit_packets(1, 8000, 0xBAD):
        leg.receive_rtp(pkt, STRANGER, 2.5)
    leg.receive_rtp(audio(1, ssrc=0xBAD), STRANGER, 2.6)
    assert (leg.remote, leg.events, leg.foreign_packets, leg.packets_received) == (PEER, [], 5, 0)
    for pkt in digit_packets(5, 9000, 99):
        leg.receive_rtp(pkt, PEER, 3.0)
    assert leg.events == [DigitReceived("L1", "5", 100, "rfc4733")] and leg.remote == PEER


def test_nothing_is_accepted_before_the_sdp_is_known() -> None:
    leg = RtpLeg("L1", IdSource(3))
    for pkt in digit_packets(1, 8000, 7):
        leg.receive_rtp(pkt, PEER, 0.0)
    leg.receive_rtcp(build_compound(ReceiverReport(7)), PEER, 0.0)
    assert (leg.events, leg.foreign_packets, leg.remote, leg.remote_rtcp) == ([], 5, None, None)


def test_a_new_address_in_sdp_reopens_the_window_and_the_same_one_does_not() -> None:
    leg = make(start=0.0, latch_window=2.0)
    leg.receive_rtp(audio(1), NAT, 0.1)
    leg.set_remote(NAT, g711.PCMA, now=10.0)  # a re-INVITE naming the address we latched to: codec only
    leg.receive_rtp(audio(2), STRANGER, 10.1)
    assert (leg.remote, leg.payload_type, leg.foreign_packets) == (NAT, g711.PCMA, 1)
    moved = ("203.0.113.5", 40000)
    leg.set_remote(moved, now=20.0)
    assert leg.remote == moved
    leg.receive_rtp(audio(3), NAT, 21.9)  # inside the new window: latched again
    assert leg.remote == NAT and leg.events[-1] == RemoteLatched("L1", *NAT)
    leg.set_remote(PEER)  # no ``now``: no window at all
    leg.receive_rtp(audio(4), NAT, 21.95)
    assert leg.remote == PEER and leg.foreign_packets == 2


def test_a_leg_takes_only_ip_literals() -> None:
    assert ip_literal("192.0.2.1") == "192.0.2.1" and ip_literal("2001:DB8::1") == "2001:db8::1"
    leg = make()
    for bad in (("media.example.com", 4000), ("localhost", 4000), ("192.0.2.1", 0), ("192.0.2.1", 70000)):
        with pytest.raises(MediaError):
            leg.set_remote(bad, now=1.0)
    assert leg.remote == PEER
    with pytest.raises(MediaError, match="not an IP address literal"):
        RtpLeg("L2", IdSource(3), remote=("localhost", 4000))


def test_rtcp_from_a_stranger_is_dropped_and_the_peer_latches() -> None:
    leg = make(start=0.0, latch_window=2.0)
    leg.receive_rtcp(build_compound(ReceiverReport(7)), ("192.0.2.7", 31001), 0.5)  # NAT'd RTCP in the window
    assert leg.remote_rtcp == ("192.0.2.7", 31001)
    leg.receive_rtcp(build_compound(ReceiverReport(7)), STRANGER, 0.6)
    assert leg.remote_rtcp == ("192.0.2.7", 31001) and leg.foreign_packets == 1


def test_no_source_address_moves_the_stream_after_the_window() -> None:
    """Fuzz: random sources, SSRCs and payload types after the window change nothing and raise nothing."""
    rng = random.Random(7)
    leg = make(start=0.0, latch_window=1.0)
    leg.receive_rtp(audio(1), PEER, 0.5)
    for k in range(2000):
        host = rng.choice([PEER[0], "10.0.0.1", NAT[0]])
        addr = (host, rng.choice([PEER[1] + 1, PEER[1] + 2, NAT[1], rng.randrange(41000, 65536)]))
        pkt = build(rng.choice([0, 8, 101, 13]), k, k * 160, rng.getrandbits(32), rng.randbytes(rng.randrange(200)))
        leg.receive_rtp(pkt, addr, 2.0 + k * 0.001)
        leg.receive_rtcp(pkt, addr, 2.0 + k * 0.001)
    assert (leg.remote, leg.remote_rtcp, leg.packets_received) == (PEER, (PEER[0], PEER[1] + 1), 1)
    assert not [e for e in leg.events if not isinstance(e, RemoteLatched)]


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


def test_audio_nobody_listens_to_is_not_buffered_and_listening_starts_afresh() -> None:
    leg = make()
    frames = [bytes([0x10 + i]) * 160 for i in range(8)]
    for seq in range(4):  # a call that only plays a prompt: what the peer says goes nowhere
        leg.receive_rtp(build(0, seq, seq * 160, 7, frames[seq]), PEER, seq * 0.02)
        leg.pull(seq * 0.02)
        assert leg.heard is None
    assert len(leg.jitter) == 0 and leg.jitter.stats.pushed == 0
    assert leg.packets_received == 4 and leg.stats is not None and leg.stats.received == 4  # RTCP still counts
    rec = Recorder()
    leg.add_sink(rec)  # a recording starts: only what arrives from now on is heard, in order
    for seq in (5, 4, 6, 7):
        leg.receive_rtp(build(0, seq, seq * 160, 7, frames[seq]), PEER, 0.1)
    heard = []
    for n in range(5):
        leg.pull(0.1 + n * 0.02)
        heard.append(leg.heard)
    assert heard == [g711.decode(f, 0) for f in frames[4:]] + [None]
    assert rec.pcm() == b"".join(g711.decode(f, 0) for f in frames[4:]) + SILENCE


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
