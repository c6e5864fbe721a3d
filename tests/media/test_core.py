from __future__ import annotations

import pytest

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.core import MediaCore
from callplane.media.events import LegFailed, SourceFinished
from callplane.media.leg import RtpLeg
from callplane.media.rtp import RtpPacket, build
from callplane.media.sources import PcmSource

A, B = ("127.0.0.1", 5000), ("127.0.0.1", 6000)


def two_legs() -> tuple[MediaCore, RtpLeg, RtpLeg]:
    core = MediaCore(IdSource(5))
    a = core.add_leg(RtpLeg("a", core.ids, remote=A))
    b = core.add_leg(RtpLeg("b", core.ids, remote=B, payload_type=g711.PCMA))
    for leg in (a, b):
        leg.jitter.prefill = 1
    return core, a, b


def test_bridged_audio_crosses_in_the_same_tick_and_is_transcoded() -> None:
    core, a, b = two_legs()
    core.bridge("a", "b")
    voice = bytes([0x9A]) * 160
    a.receive_rtp(build(0, 1, 0, 11, voice), A, 0.0)
    out = core.tick(0.02, 1)
    to_b = [RtpPacket.parse(d) for leg_id, d, addr in out if leg_id == "b"]
    to_a = [RtpPacket.parse(d) for leg_id, d, addr in out if leg_id == "a"]
    assert [(p.payload_type, p.payload) for p in to_b] == [(8, g711.encode(g711.decode(voice, 0), 8))]
    assert [p.payload for p in to_a] == [g711.encode(bytes(320), 0)]  # b said nothing: a hears silence
    assert {addr for _, _, addr in out} == {A, B}
    with pytest.raises(MediaError, match="already bridged"):
        core.join("room", "a")


def test_source_plays_until_finished_then_silence_and_one_event() -> None:
    core, a, _ = two_legs()
    a.source = PcmSource(bytes([1, 0]) * 200)  # 1.25 frames
    payloads = [RtpPacket.parse(d).payload for n in range(4) for lid, d, _ in core.tick(n * 0.02, n) if lid == "a"]
    pad = bytes([1, 0]) * 40 + bytes(240)
    assert payloads == [g711.encode(x, 0) for x in (bytes([1, 0]) * 160, pad, bytes(320), bytes(320))]
    assert core.drain_events() == [SourceFinished("a")]
    assert core.drain_events() == []


def test_remove_leg_leaves_its_conference_and_bridge() -> None:
    core, a, b = two_legs()
    c = core.add_leg(RtpLeg("c", core.ids, remote=A))
    core.bridge("a", "b")
    core.join("room", "c")
    core.remove_leg("a")
    assert "b" not in core.bridges and not b.attached
    assert c.attached
    core.remove_leg("c")
    assert "room" not in core.conferences and not c.attached
    assert list(core.legs) == ["b"]


class Exploding:
    """A source (or sink) that breaks after ``after`` frames: raises, or returns a frame of the wrong length."""

    def __init__(self, after: int, frame: bytes | None = None) -> None:
        self.left = after
        self.bad = frame

    def read(self) -> bytes | None:
        self.left -= 1
        if self.left >= 0:
            return bytes(320)
        if self.bad is not None:
            return self.bad
        raise RuntimeError("decoder blew up")

    def write(self, frame: bytes, now: float) -> None:
        if self.read() is None:
            return

    def stop(self) -> None:
        pass


def test_a_faulty_leg_is_closed_and_reported_and_the_others_keep_their_frames() -> None:
    core = MediaCore(IdSource(5))
    legs = [core.add_leg(RtpLeg(f"L{i}", core.ids, remote=("127.0.0.1", 5000 + 2 * i))) for i in range(5)]
    legs[0].source = Exploding(2)  # raises in produce
    legs[2].source = Exploding(1, frame=bytes(100))  # a short frame: a fault of that leg, never sent
    legs[3].add_sink(Exploding(3))  # its sink raises in pull
    sent: dict[str, list[int]] = {}
    for n in range(6):
        for leg_id, pkt, _ in core.tick(n * 0.02, n):
            sent.setdefault(leg_id, []).append(len(pkt))
    assert sent == {"L0": [172] * 2, "L1": [172] * 6, "L2": [172], "L3": [172] * 3, "L4": [172] * 6}
    events = core.drain_events()
    assert [(type(e).__name__, e.leg_id) for e in events] == [("LegFailed", "L2"), ("LegFailed", "L0"),
                                                              ("LegFailed", "L3")]  # fmt: skip
    assert events[0] == LegFailed("L2", "FrameError: the source gave a 100-byte frame, not 320")
    assert events[1] == LegFailed("L0", "RuntimeError: decoder blew up")
    assert sorted(core.legs) == ["L1", "L4"] and sorted(core.failed) == ["L0", "L2", "L3"]


def test_a_fault_in_a_bridge_ends_both_of_its_legs_only() -> None:
    core, a, b = two_legs()
    c = core.add_leg(RtpLeg("c", core.ids, remote=A))
    core.bridge("a", "b")
    core.bridges["a"].hold(a, music=Exploding(1))  # a's hold music raises inside the bridge's mix
    assert sorted(lid for lid, _, _ in core.tick(0.0, 0)) == ["a", "b", "c"]
    assert [lid for lid, _, _ in core.tick(0.02, 1)] == ["c"]
    assert [e.leg_id for e in core.drain_events() if isinstance(e, LegFailed)] == ["a", "b"]
    assert list(core.legs) == ["c"] and core.bridges == {} and c is core.legs["c"]


def test_a_wrong_length_feed_ends_the_leg_it_was_for() -> None:
    core, a, b = two_legs()
    core.bridge("a", "b")
    core.bridges["a"].hold(a, music=Exploding(0, frame=bytes(3)))  # a short frame of a's hold music
    assert [lid for lid, _, _ in core.tick(0.0, 0)] == ["b"]
    assert core.drain_events() == [
        LegFailed("a", "FrameError: the bridge/conference feed gave a 3-byte frame, not 320")
    ]
    assert not b.attached and [lid for lid, _, _ in core.tick(0.02, 1)] == ["b"]  # b goes on, unbridged
