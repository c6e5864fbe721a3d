"""Recording a bridge: two channels (left: what the first leg's peer says, right: the other's), in virtual time and
through the engine over loopback UDP."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.aio import MediaEngine
from callplane.media.core import MediaCore
from callplane.media.events import MediaEvent, RecordingFinished
from callplane.media.leg import RtpLeg
from callplane.media.recorder import Recorder
from callplane.media.rtp import build
from callplane.media.sources import SAMPLE_RATE, ToneSource
from tests.media.rawpeer import RawPeer

A, B = ("127.0.0.1", 5000), ("127.0.0.1", 6000)


def tone_payloads(hz: float, n: int, pt: int) -> list[bytes]:
    src = ToneSource([hz], None, 0.3)
    return [g711.encode(src.read() or b"", pt) for _ in range(n)]


def channels(wav: bytes) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, SAMPLE_RATE)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return x[0::2], x[1::2]


def level_at(x: np.ndarray, hz: float) -> float:
    """Amplitude of the ``hz`` component (RMS over the band +-20 Hz, per sample)."""
    spectrum = np.abs(np.fft.rfft(x)) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(np.sqrt(np.sum(spectrum[(freqs >= hz - 20) & (freqs <= hz + 20)] ** 2)))


def bridged(ids: int = 7) -> tuple[MediaCore, RtpLeg, RtpLeg]:
    core = MediaCore(IdSource(ids))
    a = core.add_leg(RtpLeg("a", core.ids, remote=A))
    b = core.add_leg(RtpLeg("b", core.ids, remote=B, payload_type=g711.PCMA))
    core.bridge("a", "b")
    return core, a, b


def feed(core: MediaCore, a: RtpLeg, b: RtpLeg, ticks: int, start: int = 0) -> list[MediaEvent]:
    """Both peers talk (a's: 440 Hz PCMU, b's: 1000 Hz PCMA) for ``ticks`` ticks; the events reported."""
    pa, pb = tone_payloads(440, ticks, 0), tone_payloads(1000, ticks, 8)
    events: list[MediaEvent] = []
    for k in range(ticks):
        n = start + k
        a.receive_rtp(build(0, n, n * 160, 11, pa[k]), A, n * 0.02)
        b.receive_rtp(build(8, n, n * 160, 22, pb[k]), B, n * 0.02)
        core.tick(n * 0.02, n)
        events += core.drain_events()
    return events


def test_two_channels_hold_each_sides_tone_and_max_length_ends_it() -> None:
    core, a, b = bridged()
    rec = Recorder(max_length_s=1.0, silence_timeout_s=0.1, finish_on_key="#")  # the last two are not used
    core.bridges["a"].record(rec, b)  # b's peer on the left
    events = feed(core, a, b, 70)
    assert events == [RecordingFinished("b", "max-length", 1.0)]
    left, right = channels(rec.wav())
    assert len(left) == len(right) == SAMPLE_RATE
    steady = slice(SAMPLE_RATE // 10, None)  # after the jitter buffer's prefill
    assert level_at(left[steady], 1000) > 30 * level_at(left[steady], 440)
    assert level_at(right[steady], 440) > 30 * level_at(right[steady], 1000)
    assert level_at(left[steady], 1000) > 4000  # a 0.3 full-scale sine: A/2 = 4915


def test_a_muted_or_held_side_is_recorded_as_silence() -> None:
    core, a, b = bridged()
    rec = Recorder(max_length_s=None)
    core.bridges["a"].record(rec, a)
    a.muted = True
    core.bridges["a"].hold(b)
    feed(core, a, b, 20)
    left, right = channels(rec.wav())
    assert not left.any() and not right.any()


def test_closing_either_leg_ends_the_recording_with_the_first_legs_event() -> None:
    core, a, b = bridged()
    rec = Recorder(max_length_s=None)
    core.bridges["a"].record(rec, a)
    feed(core, a, b, 10)
    core.remove_leg("b")
    assert rec.finished == "stopped"
    core.tick(0.2, 10)
    assert core.drain_events() == [RecordingFinished("a", "stopped", 0.2)]
    assert channels(rec.wav())[0].size == 10 * 160


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(port_range=(30000, 60000), rtcp_interval=3600.0)
    await eng.start()
    yield eng
    await eng.close()


async def next_recording(eng: MediaEngine, timeout: float = 5.0) -> RecordingFinished:
    async def go() -> RecordingFinished:
        while True:
            ev = await eng.events.get()
            if isinstance(ev, RecordingFinished):
                return ev

    return await asyncio.wait_for(go(), timeout)


async def test_record_bridge_on_the_wire(engine: MediaEngine, tmp_path: Path) -> None:
    caller, callee = RawPeer(), RawPeer()
    try:
        a, pa = engine.create_leg()
        b, pb = engine.create_leg(payload_type=g711.PCMA)
        engine.set_remote(a, "127.0.0.1", caller.port)
        engine.set_remote(b, "127.0.0.1", callee.port, payload_type=g711.PCMA)
        with pytest.raises(MediaError):
            engine.record_bridge(a, b, tmp_path / "x.wav", Recorder())  # not bridged yet
        engine.bridge(a, b)
        path = tmp_path / "bridge.wav"
        engine.record_bridge(a, b, path, Recorder(max_length_s=60))
        with pytest.raises(MediaError):
            engine.record_bridge(a, b, path, Recorder())
        pa_frames, pb_frames = tone_payloads(440, 40, 0), tone_payloads(1000, 40, 8)
        for k in range(40):
            caller.send(build(0, k, k * 160, 11, pa_frames[k]), pa)
            callee.send(build(8, k, k * 160, 22, pb_frames[k]), pb)
            await asyncio.sleep(0.02)
        engine.stop_recording(a)
        ev = await next_recording(engine)
        assert (ev.leg_id, ev.reason, ev.path) == (a, "stopped", str(path))
        left, right = channels(path.read_bytes())
        assert len(left) == round(ev.duration_s * SAMPLE_RATE)
        assert level_at(left, 440) > 10 * level_at(left, 1000) and level_at(left, 440) > 1000
        assert level_at(right, 1000) > 10 * level_at(right, 440) and level_at(right, 1000) > 1000
    finally:
        caller.close()
        callee.close()


async def test_record_bridge_ends_when_the_other_leg_closes(engine: MediaEngine, tmp_path: Path) -> None:
    a, _ = engine.create_leg()
    b, _ = engine.create_leg()
    engine.set_remote(a, "127.0.0.1", 9)
    engine.set_remote(b, "127.0.0.1", 9)
    engine.bridge(a, b)
    engine.record_bridge(b, a, tmp_path / "r.wav", Recorder())
    await asyncio.sleep(0.1)
    engine.close_leg(a)
    ev = await next_recording(engine)
    assert (ev.leg_id, ev.reason, ev.path) == (b, "stopped", str(tmp_path / "r.wav"))
    assert channels((tmp_path / "r.wav").read_bytes())[0].size > 0
