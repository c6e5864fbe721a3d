from __future__ import annotations

import numpy as np

from callplane.media.sources import FRAME_BYTES, SILENCE, PcmSource, SilenceSource, ToneSource, tone_pcm


def _drain(src: SilenceSource | PcmSource | ToneSource) -> list[bytes]:
    out: list[bytes] = []
    while (f := src.read()) is not None:
        out.append(f)
        assert len(out) < 10_000
    return out


def test_silence_duration_and_stop() -> None:
    assert _drain(SilenceSource(0.1)) == [SILENCE] * 5
    s = SilenceSource()
    assert s.read() == SILENCE
    s.stop()
    assert s.read() is None


def test_pcm_source_pads_last_frame() -> None:
    pcm = bytes(range(256)) * 3  # 768 bytes = 2 frames + 128 bytes
    frames = _drain(PcmSource(pcm))
    assert [len(f) for f in frames] == [FRAME_BYTES] * 3
    assert b"".join(frames) == pcm + bytes(3 * FRAME_BYTES - len(pcm))


def test_pcm_source_stop_is_barge_in() -> None:
    src = PcmSource(bytes(FRAME_BYTES * 10))
    assert src.read() is not None
    src.stop()
    assert src.read() is None


def test_tone_frequency_and_length() -> None:
    frames = _drain(ToneSource([1000], 0.5, amplitude=0.5))
    assert len(frames) == 25
    x = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x))
    assert round(float(np.argmax(spectrum)) * 8000 / len(x)) == 1000
    assert 16000 < np.max(np.abs(x)) <= 16384


def test_tone_is_continuous_across_frames() -> None:
    # Cached-cycle path and computed path give the same samples.
    a = b"".join(_drain(ToneSource([697, 1209], 0.3)))
    assert a == tone_pcm([697, 1209], 0.3)
    b = b"".join(_drain(ToneSource([440.5], 0.1)))
    assert b == tone_pcm([440.5], 0.1)
