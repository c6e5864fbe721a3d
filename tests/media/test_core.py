from __future__ import annotations

import pytest

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.core import MediaCore
from callplane.media.events import SourceFinished
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
