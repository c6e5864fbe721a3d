"""Bridges that relay without decoding: payloads untouched, headers rewritten into the receiving leg's own stream,
continuity across switches to decoding and back, RFC 4733 pass-through, mute and hold, strangers, RTCP."""

from __future__ import annotations

import asyncio

from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.aio import MediaEngine
from callplane.media.core import MediaCore
from callplane.media.dtmf import TelephoneEvent
from callplane.media.events import DigitReceived
from callplane.media.leg import RtpLeg
from callplane.media.recorder import Recorder
from callplane.media.rtcp import SenderReport, parse_compound
from callplane.media.rtp import RtpPacket, build
from callplane.media.sources import ToneSource
from tests.media.rawpeer import RawPeer

A, B, STRANGER = ("127.0.0.1", 5000), ("127.0.0.1", 6000), ("127.0.0.1", 7000)
SRC_SSRC = 0x99
ARRIVAL = 0.005  # a's peer's packets arrive this long after each tick


def payload(k: int) -> bytes:
    return bytes((k * 7 + i) & 0xFF for i in range(160))


class Bridged:
    """Legs a (PCMU) and b (``b_pt``) bridged on a core in virtual time; everything b sends, with its send time."""

    def __init__(self, b_pt: int = g711.PCMU, b_dtmf: int | None = 96) -> None:
        self.core = MediaCore(IdSource(3))
        self.a = self.core.add_leg(RtpLeg("a", self.core.ids, remote=A, rtcp_interval=3600.0))
        self.b = self.core.add_leg(
            RtpLeg("b", self.core.ids, remote=B, payload_type=b_pt, dtmf_payload_type=b_dtmf, rtcp_interval=3600.0)
        )
        self.bridge = self.core.bridge("a", "b")
        self.n = 0
        self.seq = 1000  # a's peer's next sequence number
        self.sent: list[tuple[float, RtpPacket, str]] = []  # (time, packet, "relay" or "tick")

    def tick(self, packet: bytes | None = None, frm: tuple[str, int] = A) -> list[RtpPacket]:
        """One tick; then, ``ARRIVAL`` later, a's peer's ``packet`` (if any). Returns what b sent meanwhile."""
        t = self.n * 0.02
        out: list[RtpPacket] = []
        for leg_id, data, addr in self.core.tick(t, self.n):
            if leg_id == "b" and not 200 <= data[1] <= 204:
                assert addr == B
                out.append(RtpPacket.parse(data))
                self.sent.append((t, out[-1], "tick"))
        if packet is not None:
            relayed = self.a.receive_rtp(packet, frm, t + ARRIVAL)
            if relayed is not None:
                leg_id, pkt, addr = relayed
                assert (leg_id, addr) == ("b", B)
                out.append(RtpPacket.parse(bytes(pkt)))
                self.sent.append((t + ARRIVAL, out[-1], "relay"))
        self.n += 1
        return out

    def talk(self, k: int, pt: int = 0, data: bytes | None = None) -> list[RtpPacket]:
        """a's peer sends frame ``k`` of its stream (timestamp 160 k + 4321)."""
        pkt = build(
            pt, self.seq & 0xFFFF, (4321 + 160 * k) & 0xFFFFFFFF, SRC_SSRC, payload(k) if data is None else data
        )
        self.seq += 1
        return self.tick(pkt)


def assert_one_stream(sent: list[tuple[float, RtpPacket, str]], ssrc: int) -> None:
    """RFC 3550 continuity: one SSRC, sequence numbers without gap or repeat, and every timestamp step is the
    20 ms frames elapsed between the two packets (at least one)."""
    assert {p.ssrc for _, p, _ in sent} == {ssrc}
    for (t0, p0, _), (t1, p1, _) in zip(sent, sent[1:], strict=False):
        assert (p1.sequence - p0.sequence) & 0xFFFF == 1
        assert ((p1.timestamp - p0.timestamp) & 0xFFFFFFFF) // 160 == max(1, round((t1 - t0) / 0.02))
        assert (p1.timestamp - p0.timestamp) % 160 == 0


def test_relayed_payloads_are_the_bytes_that_came_in_under_bs_own_header() -> None:
    br = Bridged()
    got = [p for k in range(20) for p in br.talk(k)]
    assert [kind for _, _, kind in br.sent] == ["relay"] * 20  # the first tick decided: b sends nothing on it
    relayed = got
    assert [p.payload for p in relayed] == [payload(k) for k in range(20)]
    assert {(p.payload_type, p.ssrc) for p in relayed} == {(0, br.b.ssrc)} and br.b.ssrc != SRC_SSRC
    assert_one_stream(br.sent, br.b.ssrc)
    assert br.a.jitter.stats.pushed == 0  # nothing decoded
    assert br.a.packets_received == 20 and br.b.packets_sent == 20


def test_continuity_across_relay_decoded_relay_as_a_recording_starts_and_stops() -> None:
    br = Bridged()
    for k in range(5):
        br.talk(k)
    rec = Recorder(max_length_s=None)
    br.bridge.record(rec, br.a)
    for k in range(5, 15):
        br.talk(k)
    rec.stop()
    for k in range(15, 25):
        br.talk(k)
    kinds = [kind for _, _, kind in br.sent]
    # relay until the recording starts; decoded on the tick while it runs; relayed again once it stopped
    assert kinds == ["relay"] * 5 + ["tick"] * 10 + ["relay"] * 10
    assert_one_stream(br.sent, br.b.ssrc)
    assert [p.payload for _, p, kind in br.sent[15:]] == [payload(k) for k in range(15, 25)]
    assert br.a.jitter.stats.pushed > 0  # the recording heard a's peer
    assert any(rec.pcm())  # it heard a's peer


def test_a_quiet_source_is_filled_with_silence_and_resumes_in_one_stream() -> None:
    br = Bridged()
    for k in range(5):
        br.talk(k)
    for _ in range(10):  # a's peer sends nothing for 200 ms (silence suppression, or it holds and plays nothing)
        br.tick()
    for k in range(15, 20):
        br.talk(k)
    kinds = [kind for _, _, kind in br.sent]
    # the last packet came 5 ms after tick 4: from tick 8 on (75 ms later), b's tick fills with silence
    assert kinds == ["relay"] * 5 + ["tick"] * 8 + ["relay"] * 5
    assert {p.payload for _, p, kind in br.sent if kind == "tick"} == {bytes([0xFF]) * 160}
    assert [p.payload for _, p, _ in br.sent[13:]] == [payload(k) for k in range(15, 20)]
    assert_one_stream(br.sent, br.b.ssrc)


def test_a_transcoded_bridge_decodes() -> None:
    br = Bridged(b_pt=g711.PCMA)
    tone = ToneSource([437], None, 0.3)  # no two frames alike
    frames = [g711.encode(tone.read() or b"", 0) for _ in range(10)]
    got = [p for k in range(10) for p in br.talk(k, data=frames[k])]
    assert [kind for _, _, kind in br.sent] == ["tick"] * 10
    assert {p.payload_type for p in got} == {8}
    want = {g711.encode(g711.decode(f, 0), 8) for f in frames}
    assert len(want & {p.payload for p in got}) >= 6  # after the jitter buffer's prefill
    assert_one_stream(br.sent, br.b.ssrc)


def test_a_muted_leg_is_not_heard_and_hold_plays_music() -> None:
    br = Bridged()
    for k in range(3):
        br.talk(k)
    br.a.muted = True
    assert br.a.receive_rtp(build(0, 2000, 0, SRC_SSRC, payload(0)), A, br.n * 0.02 - 0.01) is None  # at once
    got = [p for k in range(3, 8) for p in br.talk(k)]
    assert [p.payload for p in got] == [bytes([0xFF]) * 160] * 5  # mu-law silence on the tick, not a's audio
    br.a.muted = False
    br.talk(8)
    assert br.sent[-1][2] == "relay"
    br.bridge.hold(br.b, ToneSource([800], None, 0.3))  # b's peer is held: it hears the music, not a's peer
    got = [p for k in range(9, 14) for p in br.talk(k)]
    assert [kind for _, _, kind in br.sent[-5:]] == ["tick"] * 5
    same = ToneSource([800], None, 0.3)
    assert [p.payload for p in got] == [g711.encode(same.read() or b"", 0) for _ in range(5)]
    assert_one_stream(br.sent, br.b.ssrc)


def test_rfc4733_passes_through_as_bs_own_events() -> None:
    br = Bridged()
    for k in range(3):
        br.talk(k)
    ev_ts = 4321 + 160 * 3
    events = [TelephoneEvent(5, False, 10, 160 * (i + 1)) for i in range(4)] + [TelephoneEvent(5, True, 10, 800)] * 3
    for e in events:
        br.tick(build(101, br.seq, ev_ts, SRC_SSRC, bytes(e), marker=e.duration == 160))
        br.seq += 1
    for k in range(10, 13):
        br.talk(k)
    ev = [p for _, p, _ in br.sent if p.payload_type == 96]
    assert [TelephoneEvent.parse(p.payload) for p in ev] == events
    assert [p.marker for p in ev] == [True] + [False] * 6
    assert len({p.timestamp for p in ev}) == 1 and ev[0].timestamp != ev_ts
    before = [p for _, p, _ in br.sent if p.payload_type == 0][2]
    assert (ev[0].timestamp - before.timestamp) & 0xFFFFFFFF == 160  # the event starts where a's did
    assert not br.b.dtmf_out.busy  # passed through, not regenerated
    assert [e for e in br.core.drain_events() if isinstance(e, DigitReceived)] == [
        DigitReceived("a", "5", 100, "rfc4733")
    ]
    seqs = [p.sequence for _, p, _ in br.sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


def test_a_switch_waits_for_the_digit_crossing_to_end() -> None:
    br = Bridged()
    br.talk(0)
    br.tick(build(101, br.seq, 4481, SRC_SSRC, bytes(TelephoneEvent(1, False, 10, 160)), marker=True))
    br.seq += 1
    br.bridge.record(Recorder(max_length_s=None), br.a)  # wants decoding, but the digit is under way
    for d in (320, 480):
        out = br.tick(build(101, br.seq, 4481, SRC_SSRC, bytes(TelephoneEvent(1, False, 10, d))))
        br.seq += 1
        assert [p.payload_type for p in out] == [96]  # still passed through: no tick packet either
    for _ in range(3):
        br.tick(build(101, br.seq, 4481, SRC_SSRC, bytes(TelephoneEvent(1, True, 10, 480))))
        br.seq += 1
    br.talk(9)
    assert br.sent[-1][2] == "relay"  # the digit's end packets went through; the audio after it too
    br.talk(10)
    assert br.sent[-1][2] == "tick"  # decoding now
    assert [TelephoneEvent.parse(p.payload).end for _, p, _ in br.sent if p.payload_type == 96] == [False] * 3 + [
        True
    ] * 3
    seqs = [p.sequence for _, p, _ in br.sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


def test_a_mute_mid_digit_still_ends_the_passed_through_event() -> None:
    br = Bridged()
    br.talk(0)
    for d in (160, 320):
        br.tick(build(101, br.seq, 4481, SRC_SSRC, bytes(TelephoneEvent(7, False, 10, d)), marker=d == 160))
        br.seq += 1
    br.a.muted = True  # a mute acts at once, mid-digit
    for k in range(3, 8):
        br.talk(k)
    ev = [p for _, p, _ in br.sent if p.payload_type == 96]
    assert [TelephoneEvent.parse(p.payload) for p in ev] == [
        TelephoneEvent(7, False, 10, 160),
        TelephoneEvent(7, False, 10, 320),
    ] + [TelephoneEvent(7, True, 10, 320)] * 3
    assert len({p.timestamp for p in ev}) == 1  # the same event, ended by b on the tick
    assert [kind for _, p, kind in br.sent if p.payload_type == 96] == ["relay"] * 2 + ["tick"] * 3
    seqs = [p.sequence for _, p, _ in br.sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    assert {p.payload for _, p, kind in br.sent if kind == "tick" and p.payload_type == 0} == {bytes([0xFF]) * 160}


def test_a_strangers_packets_are_dropped_while_relaying() -> None:
    br = Bridged()
    for k in range(3):
        br.talk(k)
    out = br.tick(build(0, br.seq, 0, 0x666, payload(99)), frm=STRANGER)
    assert out == [] and br.a.foreign_packets == 1
    assert br.tick(build(101, 1, 0, 0x666, bytes(TelephoneEvent(9, True, 10, 800))), frm=STRANGER) == []
    assert br.a.foreign_packets == 2 and payload(99) not in [p.payload for _, p, _ in br.sent]
    assert not [e for e in br.core.drain_events() if isinstance(e, DigitReceived)]


def test_other_ptime_or_a_new_sender_and_the_sender_report() -> None:
    br = Bridged()
    for k in range(5):
        br.talk(k)
    # A new SSRC from the accepted source (a re-INVITE to another media server): the stream still continues.
    br.tick(build(0, 40000, 123, 0xBEEF, payload(5)))
    br.tick(build(0, 40001, 283, 0xBEEF, payload(6)))
    assert_one_stream(br.sent, br.b.ssrc)
    # RTCP: b's sender report counts the relayed packets and gives the relayed stream's clock.
    now = br.n * 0.02 - 0.02 + ARRIVAL
    sr = parse_compound(br.b.rtcp_report(now))[0]
    assert isinstance(sr, SenderReport)
    last = br.sent[-1][1]
    assert (sr.packet_count, sr.octet_count) == (len(br.sent), 160 * len(br.sent))
    assert sr.rtp_timestamp == last.timestamp
    # 30 ms packets cannot be relayed as they are: that one is dropped and the bridge decodes from the next tick.
    assert br.tick(build(0, 40002, 443, 0xBEEF, bytes(240))) == []
    assert br.a.relay_blocked
    br.tick(build(0, 40003, 683, 0xBEEF, bytes(240)))
    assert br.sent[-1][2] == "tick"
    assert_one_stream(br.sent, br.b.ssrc)


async def test_relay_on_the_wire(engine: MediaEngine) -> None:
    caller, callee = RawPeer(), RawPeer()
    try:
        a, pa = engine.create_leg()
        b, pb = engine.create_leg(dtmf_payload_type=97)
        engine.set_remote(a, "127.0.0.1", caller.port)
        engine.set_remote(b, "127.0.0.1", callee.port, dtmf_payload_type=97)
        engine.bridge(a, b)
        await asyncio.sleep(0.05)
        for k in range(10):
            caller.send(build(0, 500 + k, 160 * k, 0xCAFE, payload(k)), pa)
            await asyncio.sleep(0.02)
        caller.send(build(101, 510, 1600, 0xCAFE, bytes(TelephoneEvent(3, True, 10, 800))), pa)
        got: list[RtpPacket] = []
        while not any(p.payload_type == 97 for p in got):
            got += await callee.recv(1)
        relayed = [p for p in got if p.payload in {payload(k) for k in range(10)}]
        assert [p.payload for p in relayed] == [payload(k) for k in range(10)]
        assert {p.ssrc for p in got} == {engine.leg(b).ssrc}
        seqs = [p.sequence for p in got]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
        assert TelephoneEvent.parse(got[-1].payload) == TelephoneEvent(3, True, 10, 800)
    finally:
        caller.close()
        callee.close()


def test_a_peer_without_telephone_event_gets_the_audio_relayed_and_no_event() -> None:
    br = Bridged(b_dtmf=None)
    for k in range(3):
        br.talk(k)
    ev_ts = 4321 + 160 * 3
    events = [TelephoneEvent(7, False, 10, 160 * (i + 1)) for i in range(3)] + [TelephoneEvent(7, True, 10, 640)] * 3
    for e in events:
        br.tick(build(101, br.seq, ev_ts, SRC_SSRC, bytes(e), marker=e.duration == 160))
        br.seq += 1
    for k in range(9, 12):
        br.talk(k)
    # The audio is relayed, not decoded, on both sides of the digit; while the events (kept here) last longer than
    # 70 ms, b's peer gets silence on the tick instead; one stream throughout, no event, no gap.
    relayed = [p.payload for _, p, kind in br.sent if kind == "relay"]
    assert relayed == [payload(k) for k in (0, 1, 2, 9, 10, 11)]
    assert {p.payload for _, p, kind in br.sent if kind == "tick"} <= {bytes([0xFF]) * 160}
    assert br.a.jitter.stats.pushed == 0
    assert {p.payload_type for _, p, _ in br.sent} == {0}
    assert_one_stream(br.sent, br.b.ssrc)
    assert [e for e in br.core.drain_events() if isinstance(e, DigitReceived)] == [
        DigitReceived("a", "7", 80, "rfc4733")
    ]


def test_a_packet_with_csrcs_extension_and_padding_is_relayed_as_its_payload_under_a_plain_header() -> None:
    br = Bridged()
    br.talk(0)
    header = bytes([0x80 | 0x20 | 0x10 | 1, 0]) + br.seq.to_bytes(2, "big") + (4481).to_bytes(4, "big")
    header += SRC_SSRC.to_bytes(4, "big") + (0x1234).to_bytes(4, "big")  # one CSRC
    ext = (0xBEDE).to_bytes(2, "big") + (1).to_bytes(2, "big") + b"\x10\xaa\x00\x00"  # one word of extension
    out = br.tick(header + ext + payload(1) + b"\x00\x00\x00\x04")  # four octets of padding
    br.seq += 1
    assert len(out) == 1
    relayed = out[0]
    assert (relayed.payload, relayed.csrc, relayed.extension) == (payload(1), (), None)
    assert len(bytes(relayed)) == 12 + 160
    br.talk(2)
    assert_one_stream(br.sent, br.b.ssrc)
    assert [p.payload for _, p, _ in br.sent] == [payload(0), payload(1), payload(2)]
