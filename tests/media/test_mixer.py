from __future__ import annotations

import functools

import numpy as np
import pytest

from callplane.core.ids import IdSource
from callplane.media.bridge import Bridge
from callplane.media.leg import RtpLeg
from callplane.media.mixer import Conference
from callplane.media.sources import FRAME_SAMPLES, SILENCE, ToneSource


def leg(name: str) -> RtpLeg:
    return RtpLeg(name, IdSource(1), remote=("127.0.0.1", 9))


def pcm(values: np.ndarray) -> bytes:
    return values.astype("<i2").tobytes()


def arr(frame: bytes | None) -> np.ndarray:
    assert frame is not None
    return np.frombuffer(frame, dtype="<i2").astype(np.int64)


def test_mix_minus_each_hears_clipped_sum_of_the_others() -> None:
    rng = np.random.default_rng(7)
    legs = [leg(f"p{i}") for i in range(6)]
    conf = Conference("room", beep_factory=None)
    for lg in legs:
        conf.join(lg)
    inputs = [rng.integers(-20000, 20000, FRAME_SAMPLES) for _ in legs]
    for lg, x in zip(legs, inputs, strict=True):
        lg.heard = pcm(x)
    conf.mix(0.0)
    total = np.sum(inputs, axis=0)
    for lg, x in zip(legs, inputs, strict=True):
        expect = np.clip(total - x, -32768, 32767)
        assert np.array_equal(arr(lg.feed), expect)
    assert any(np.any(np.abs(total - x) > 32767) for x in inputs)  # clipping was exercised


def test_muted_held_and_silent_participants() -> None:
    a, b, c, d = (leg(n) for n in "abcd")
    conf = Conference("room", beep_factory=None, music=lambda: ToneSource([500], None, 0.1))
    for lg in (a, b, c, d):
        conf.join(lg)
    conf.mute(b)
    conf.hold(d)
    a.heard, b.heard, c.heard, d.heard = pcm(np.full(160, 100)), pcm(np.full(160, 20)), None, pcm(np.full(160, 7))
    conf.mix(0.0)
    assert np.array_equal(arr(a.feed), np.zeros(160))  # b muted, c sent nothing, d held
    assert np.array_equal(arr(b.feed), np.full(160, 100))  # a muted participant still hears
    assert np.array_equal(arr(c.feed), np.full(160, 100))
    assert d.feed == ToneSource([500], None, 0.1).read()  # held: hold music, not the room


def test_lone_participant_hears_music_and_beeps_are_mixed_for_everyone() -> None:
    a, b = leg("a"), leg("b")
    conf = Conference("room", music=lambda: ToneSource([400], None, 0.1), beep_factory=lambda: ToneSource([1000], 0.04))
    conf.join(a)
    a.heard = SILENCE
    conf.mix(0.0)
    music = ToneSource([400], None, 0.1)
    beep = ToneSource([1000], 0.04)
    assert np.array_equal(arr(a.feed), arr(music.read()) + arr(beep.read()))
    conf.join(b)  # a second beep starts; a's first beep is on its second frame
    a.heard = b.heard = SILENCE
    conf.mix(0.02)
    beep2 = ToneSource([1000], 0.04)
    expect = arr(beep.read()) + arr(beep2.read())
    assert np.array_equal(arr(a.feed), expect) and np.array_equal(arr(b.feed), expect)
    conf.mix(0.04)
    assert np.array_equal(arr(a.feed), arr(beep2.read()))
    conf.mix(0.06)
    assert a.feed == SILENCE  # no more music once two are present


def test_bridge_each_hears_the_other_mute_and_hold() -> None:
    a, b = leg("a"), leg("b")
    br = Bridge(a, b, relay=False)  # the decoded path (same codec both sides would relay: see test_relay.py)
    a.heard, b.heard = pcm(np.full(160, 1)), pcm(np.full(160, 2))
    br.mix(0.0)
    assert (a.feed, b.feed) == (b.heard, a.heard)
    br.hold(b, ToneSource([300], None))
    br.mix(0.0)
    assert a.feed == SILENCE and b.feed == ToneSource([300], None).read()
    br.unhold(b)
    b.heard = None  # nothing arrived from b this tick
    br.mix(0.0)
    assert a.feed == SILENCE and b.feed == a.heard
    br.close()
    assert not a.attached and not b.attached


class Broken:
    """A source that plays ``frames`` good frames, then raises (or gives a short frame)."""

    def __init__(self, frames: int, short: bool = False) -> None:
        self.left = frames
        self.short = short

    def read(self) -> bytes | None:
        self.left -= 1
        if self.left >= 0:
            return pcm(np.full(FRAME_SAMPLES, 100))
        if self.short:
            return b"\x01\x00" * 7
        raise RuntimeError("bad file")

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("short", [False, True])
def test_broken_music_or_beeps_are_dropped_and_the_conference_goes_on(short: bool) -> None:
    solo = leg("solo")
    conf = Conference(
        "room", music=functools.partial(Broken, 2, short), beep_factory=functools.partial(Broken, 1, short)
    )
    conf.join(solo)  # alone: hears the music, plus the join beep
    conf.mix(0.0)
    assert arr(solo.feed).tolist() == [200] * FRAME_SAMPLES
    conf.mix(0.02)  # the beep broke: dropped; the music plays on
    assert arr(solo.feed).tolist() == [100] * FRAME_SAMPLES
    for k in range(3):  # the music broke: silence from now on, never started again
        conf.mix(0.04 + k * 0.02)
        assert solo.feed == SILENCE
    assert conf.source_faults == 2
    other = leg("other")
    conf.join(other, beep=False)
    other.heard = pcm(np.full(FRAME_SAMPLES, 300))
    conf.mix(0.2)
    assert arr(solo.feed).tolist() == [300] * FRAME_SAMPLES
