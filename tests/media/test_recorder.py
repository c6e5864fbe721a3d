from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import pytest

from callplane.media.energy import EnergyDetector, frame_dbfs
from callplane.media.recorder import Recorder, wav_bytes
from callplane.media.sources import SILENCE, ToneSource

TONE = ToneSource([440], None, 0.5)


def voice() -> bytes:
    f = TONE.read()
    assert f is not None
    return f


def test_frame_level() -> None:
    assert frame_dbfs(SILENCE) == -math.inf
    # A sine at half scale: RMS = 0.5/sqrt(2) of full scale = -9.03 dBFS.
    assert frame_dbfs(ToneSource([400], 0.02, 0.5).read() or b"") == pytest.approx(-9.03, abs=0.05)
    det = EnergyDetector(start=10.0)
    det.write(SILENCE, 10.5)
    assert det.silent_for(11.0) == 1.0
    det.write(voice(), 11.0)
    assert det.silent_for(11.5) == 0.5 and det.voice_frames == 1


def test_max_length() -> None:
    rec = Recorder(max_length_s=0.1)
    for i in range(8):
        rec.write(voice(), i * 0.02)
    assert rec.finished == "max-length" and rec.duration_s == pytest.approx(0.1)


def test_silence_timeout_counts_from_last_voice_and_from_start() -> None:
    rec = Recorder(silence_timeout_s=0.1, start=0.0)
    t = 0.0
    for f in [voice()] * 3 + [SILENCE] * 10:
        t += 0.02
        rec.write(f, t)
    assert rec.finished == "silence"
    assert rec.duration_s == pytest.approx(0.16)  # 3 voice frames + 5 silent (0.1 s after the last voice at 0.06)
    idle = Recorder(silence_timeout_s=0.1, start=0.0)
    for i in range(1, 10):
        idle.write(SILENCE, i * 0.02)
    assert idle.finished == "silence" and idle.duration_s == pytest.approx(0.1)


def test_silence_timeout_starts_with_the_first_frame_on_any_clock() -> None:
    """As MediaEngine.record uses it: no ``start``, frames stamped with the event loop's clock (far from 0)."""
    rec = Recorder(silence_timeout_s=1.0)
    t = 81234.56
    for _ in range(49):
        t += 0.02
        rec.write(SILENCE, t)
    assert rec.finished is None  # 0.98 s of silence so far: a caller who pauses before speaking is still heard
    rec.write(voice(), t + 0.02)
    for k in range(2, 52):
        rec.write(SILENCE, t + k * 0.02)
    assert rec.finished == "silence" and rec.duration_s == pytest.approx(0.98 + 0.02 + 1.0)


def test_finish_on_key_trim_and_wav(tmp_path: Path) -> None:
    rec = Recorder(finish_on_key="#*", trim_silence=True)
    frames = [SILENCE, SILENCE, voice(), SILENCE, voice(), SILENCE]
    for i, f in enumerate(frames):
        rec.write(f, i * 0.02)
    assert not rec.on_digit("1")
    assert rec.on_digit("#") and rec.finished == "key" and rec.digit == "#"
    rec.write(voice(), 1.0)  # ignored once finished
    assert rec.pcm() == b"".join(frames[2:5])
    assert rec.save(tmp_path / "x.wav") == pytest.approx(0.06)
    with wave.open(str(tmp_path / "x.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 480)
    assert wav_bytes(b"\x01\x00")[:4] == b"RIFF"
    with wave.open(io.BytesIO(wav_bytes(b"\x01\x00"))) as w:
        assert w.readframes(1) == b"\x01\x00"
