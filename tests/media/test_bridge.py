"""Bridges: RFC 4733 digits relayed to the other leg as its own events, in virtual time and over loopback UDP."""

from __future__ import annotations

import asyncio

from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.aio import MediaEngine
from callplane.media.core import MediaCore
from callplane.media.dtmf import TelephoneEvent
from callplane.media.events import DigitReceived
from callplane.media.leg import RtpLeg
from callplane.media.rtp import RtpPacket, build
from tests.media.rawpeer import RawPeer

A, B = ("127.0.0.1", 5000), ("127.0.0.1", 6000)


def two_legs() -> tuple[MediaCore, RtpLeg, RtpLeg]:
    core = MediaCore(IdSource(5))
    a = core.add_leg(RtpLeg("a", core.ids, remote=A))
    b = core.add_leg(RtpLeg("b", core.ids, remote=B, payload_type=g711.PCMA, dtmf_payload_type=96))
    core.bridge("a", "b")
    return core, a, b


def te(event: int, end: bool, duration: int) -> bytes:
    return bytes(TelephoneEvent(event, end, 10, duration))


def run(core: MediaCore, a: RtpLeg, inbound: dict[int, list[bytes]], ticks: int) -> list[RtpPacket]:
    """Tick ``ticks`` times; before tick n, a's peer sends ``inbound[n]``. Returns what b sent."""
    sent: list[RtpPacket] = []
    for n in range(ticks):
        for data in inbound.get(n, []):
            a.receive_rtp(data, A, n * 0.02)
        sent += [RtpPacket.parse(d) for leg_id, d, _ in core.tick(n * 0.02, n) if leg_id == "b"]
    return sent


def test_bridge_relays_a_digit_as_the_other_legs_own_events() -> None:
    core, a, b = two_legs()
    src_ts = 123456
    inbound = {1 + k: [build(101, 700 + k, src_ts, 99, te(4, False, 160 * (k + 1)))] for k in range(5)}
    inbound.update({6 + k: [build(101, 705 + k, src_ts, 99, te(4, True, 800))] for k in range(3)})
    sent = run(core, a, inbound, 12)
    assert [p.payload_type for p in sent] == [8] + [96] * 8 + [8] * 3
    ev = sent[1:9]
    assert [TelephoneEvent.parse(p.payload) for p in ev] == [
        TelephoneEvent(4, False, 10, 160 * k) for k in range(1, 6)
    ] + [TelephoneEvent(4, True, 10, 800)] * 3
    # b's own stream: its SSRC, its sequence numbers, its timestamp for the tick the event began, marker once.
    assert {p.ssrc for p in sent} == {b.ssrc}
    assert [p.sequence - sent[0].sequence for p in sent] == list(range(12))
    assert {p.timestamp for p in ev} == {sent[0].timestamp + 160} != {src_ts}
    assert [p.marker for p in sent] == [True] + [True] + [False] * 10
    assert sent[9].timestamp == sent[0].timestamp + 9 * 160
    assert [e for e in core.drain_events() if isinstance(e, DigitReceived)] == [DigitReceived("a", "4", 100, "rfc4733")]


def test_relayed_digit_ends_when_the_source_end_packets_are_all_lost() -> None:
    core, a, b = two_legs()
    inbound = {1 + k: [build(101, 700 + k, 5000, 99, te(0, False, 160 * (k + 1)))] for k in range(3)}
    sent = run(core, a, inbound, 20)
    ev = [TelephoneEvent.parse(p.payload) for p in sent if p.payload_type == 96]
    # The source's last packet came at tick 3; the end timeout (200 ms) ends it at tick 13. b's event ran live
    # from tick 1, so it ends after 12 ticks of its own, with three end packets.
    assert ev == [TelephoneEvent(0, False, 10, 160 * k) for k in range(1, 13)] + [TelephoneEvent(0, True, 10, 1920)] * 3
    assert [p.payload_type for p in sent[16:]] == [8] * 4
    assert [e for e in core.drain_events() if isinstance(e, DigitReceived)] == [DigitReceived("a", "0", 60, "rfc4733")]


def test_no_relay_from_a_muted_leg_and_a_relayed_digit_ends_on_hold() -> None:
    core, a, b = two_legs()
    a.muted = True
    sent = run(core, a, {1: [build(101, 1, 0, 99, te(1, True, 800))]}, 6)
    assert {p.payload_type for p in sent} == {8}
    a.muted = False
    sent = run(core, a, {0: [build(101, 2, 800, 99, te(2, False, 160))]}, 3)
    assert [p.payload_type for p in sent] == [96] * 3
    core.bridges["b"].hold(a)  # a put on hold mid-digit: b's relayed event still ends
    sent = run(core, a, {}, 5)
    assert [TelephoneEvent.parse(p.payload) for p in sent if p.payload_type == 96] == [
        TelephoneEvent(2, True, 10, 480)
    ] * 3


def test_no_relay_to_a_leg_without_telephone_event() -> None:
    core = MediaCore(IdSource(5))
    a = core.add_leg(RtpLeg("a", core.ids, remote=A))
    b = core.add_leg(RtpLeg("b", core.ids, remote=B, dtmf_payload_type=None))
    core.bridge("a", "b")
    sent = run(core, a, {1: [build(101, 1, 0, 99, te(1, True, 800))]}, 5)
    assert {p.payload_type for p in sent} == {0}
    assert not b.dtmf_out.busy


async def test_bridge_relays_rfc4733_on_the_wire(engine: MediaEngine) -> None:
    caller, callee = RawPeer(), RawPeer()
    try:
        a, pa = engine.create_leg()
        b, pb = engine.create_leg(payload_type=g711.PCMA, dtmf_payload_type=97)
        engine.set_remote(a, "127.0.0.1", caller.port)
        engine.set_remote(b, "127.0.0.1", callee.port, payload_type=g711.PCMA, dtmf_payload_type=97)
        engine.bridge(a, b)
        await callee.recv(2)
        # The caller presses "8" for 100 ms, then "*" whose three end packets are all lost.
        for k in range(8):
            end = k >= 5
            caller.send(build(101, 10 + k, 4000, 0xCAFE, te(8, end, 800 if end else 160 * (k + 1))), pa)
            await asyncio.sleep(0.02)
        for k in range(4):
            caller.send(build(101, 18 + k, 9000, 0xCAFE, te(10, False, 160 * (k + 1))), pa)
            await asyncio.sleep(0.02)
        got: list[RtpPacket] = []
        for _ in range(100):  # 2 s of b's stream at most
            got += await callee.recv(1)
            if sum(1 for p in got if p.payload_type == 97 and TelephoneEvent.parse(p.payload).end) == 6:
                break
        ev = [p for p in got if p.payload_type == 97]
        assert {p.ssrc for p in got} == {engine.leg(b).ssrc}
        by_ts: dict[int, list[TelephoneEvent]] = {}
        for p in ev:
            by_ts.setdefault(p.timestamp, []).append(TelephoneEvent.parse(p.payload))
        assert 4000 not in by_ts and 9000 not in by_ts  # b's own timestamps, not the caller's
        (eight, star) = by_ts.values()
        assert {e.event for e in eight} == {8} and {e.event for e in star} == {10}
        for events in (eight, star):
            assert [e.end for e in events[-3:]] == [True] * 3 and not any(e.end for e in events[:-3])
            durations = [e.duration for e in events]
            assert durations == sorted(durations) and durations[-1] >= 640
        assert sum(p.marker for p in ev) == 2
        seqs = [p.sequence for p in got]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]  # one stream, no gaps
    finally:
        caller.close()
        callee.close()


def test_no_stale_digit_after_the_receiving_leg_was_on_hold() -> None:
    core, a, b = two_legs()
    b.sending = False  # b's peer put the call on hold (re-INVITE): b sends nothing
    assert run(core, a, {1: [build(101, 1, 0, 99, te(6, True, 800))]}, 4) == []
    b.sending = True
    assert {p.payload_type for p in run(core, a, {}, 10)} == {8}  # the digit is not played late
