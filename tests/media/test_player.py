"""Decoding WAV and MP3 to 8 kHz mono s16le: real files made at test time (stdlib ``wave``, PyAV's LAME encoder)."""

from __future__ import annotations

import io
import pickle
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from callplane.media.player import (
    DecodeError,
    TooLongError,
    UnsupportedFormatError,
    decode_audio,
    decode_file,
    pcm_seconds,
    sniff_format,
)
from callplane.media.sources import FRAME_SECONDS, SAMPLE_RATE

# -- fixtures shared with the other media tests (test_workers, test_httpcache) --------------------------------


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")


def make_wav(channels: list[np.ndarray], rate: int) -> bytes:
    """A PCM s16 WAV written by the stdlib; one array per channel."""
    interleaved = np.stack(channels, axis=1).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(interleaved)
    return buf.getvalue()


def make_encoded(channels: list[np.ndarray], rate: int, codec: str = "libmp3lame", fmt: str = "mp3") -> bytes:
    """Encode with PyAV (LAME for MP3, pcm_mulaw for telephony WAV)."""
    layout = "stereo" if len(channels) == 2 else "mono"
    packed = np.stack(channels, axis=1).astype("<i2").reshape(1, -1)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        if codec == "libmp3lame":
            stream.bit_rate = 64000
        step = 1152
        n = len(channels[0])
        for i in range(0, n, step):
            chunk = packed[:, i * len(channels) : min(n, i + step) * len(channels)]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def make_mp3(freq: float = 1000.0, seconds: float = 5.0, rate: int = 44100) -> bytes:
    x = tone(freq, seconds, rate)
    return make_encoded([x, x], rate)


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def peak_hz(pcm: bytes) -> float:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * SAMPLE_RATE / len(x)


def rms(pcm: bytes) -> float:
    x = samples(pcm)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def band_rms(pcm: bytes, lo: float, hi: float) -> float:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x)) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(np.sqrt(np.sum(spectrum[(freqs >= lo) & (freqs <= hi)] ** 2)))


# -- tests -----------------------------------------------------------------------------------------------------


def test_wav_at_8k_mono_is_passed_through_sample_exact() -> None:
    x = tone(440, 1.0, 8000)
    assert decode_audio(make_wav([x], 8000)) == x.tobytes()


def test_wav_44k1_stereo_tone_becomes_8k_mono_at_the_same_pitch() -> None:
    x = tone(1000, 5.0, 44100)
    pcm = decode_audio(make_wav([x, x], 44100))
    assert abs(pcm_seconds(pcm) - 5.0) <= FRAME_SECONDS
    assert abs(peak_hz(pcm) - 1000) < 2
    assert rms(pcm) > 0.3 * 32767 * 0.5  # the tone survives at roughly its level (0.707 of amplitude)


def test_mp3_44k1_stereo_tone_becomes_8k_mono_at_the_same_pitch() -> None:
    data = make_mp3(1000.0, 5.0)
    assert sniff_format(data[:16]) == "mp3"
    pcm = decode_audio(data)
    assert abs(pcm_seconds(pcm) - 5.0) <= FRAME_SECONDS
    assert abs(peak_hz(pcm) - 1000) < 2


def test_mp3_at_22050_mono() -> None:
    x = tone(700, 2.0, 22050)
    pcm = decode_audio(make_encoded([x], 22050))
    assert abs(pcm_seconds(pcm) - 2.0) <= FRAME_SECONDS
    assert abs(peak_hz(pcm) - 700) < 2


def test_stereo_is_mixed_down_keeping_both_channels() -> None:
    left, right = tone(500, 2.0, 16000), tone(1500, 2.0, 16000)
    pcm = decode_audio(make_wav([left, right], 16000))
    assert band_rms(pcm, 480, 520) > 1000
    assert band_rms(pcm, 1480, 1520) > 1000


def test_resampler_filters_what_8k_cannot_carry() -> None:
    # 5 kHz is above the 4 kHz Nyquist limit: without an anti-alias filter it would fold down to 3 kHz.
    x = tone(5000, 1.0, 44100)
    pcm = decode_audio(make_wav([x], 44100))
    assert rms(pcm) < 0.02 * rms(x.tobytes())


def test_mulaw_wav_telephony_prompt() -> None:
    x = tone(1000, 1.0, 8000)
    data = make_encoded([x], 8000, codec="pcm_mulaw", fmt="wav")
    assert data[20:22] == b"\x07\x00"  # WAVE_FORMAT_MULAW
    pcm = decode_audio(data)
    assert len(pcm) == len(x) * 2
    assert abs(peak_hz(pcm) - 1000) < 2
    assert np.max(np.abs(samples(pcm) - x)) < 0.03 * 32767  # mu-law step size at this level


def test_unknown_bytes_are_rejected_before_ffmpeg_sees_them() -> None:
    for data in (b"", b"hello world, not audio", b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", b"<html></html>"):
        with pytest.raises(UnsupportedFormatError) as info:
            decode_audio(data)
        assert info.value.code == 12300


def test_corrupt_wav_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode_audio(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    assert info.value.code == 12400


def test_length_cap() -> None:
    data = make_wav([tone(440, 2.0, 8000)], 8000)
    assert pcm_seconds(decode_audio(data, max_seconds=2.0)) == 2.0
    with pytest.raises(TooLongError):
        decode_audio(data, max_seconds=1.0)


def test_decode_file(tmp_path: Path) -> None:
    path = tmp_path / "prompt.mp3"
    path.write_bytes(make_mp3(1000.0, 1.0))
    pcm = decode_file(path)
    assert abs(pcm_seconds(pcm) - 1.0) <= FRAME_SECONDS
    with pytest.raises(DecodeError, match="cannot read"):
        decode_file(tmp_path / "missing.wav")
    with pytest.raises(DecodeError, match="over the 10 byte limit"):
        decode_file(path, max_bytes=10)


def test_errors_survive_the_trip_back_from_a_worker_process() -> None:
    err = pickle.loads(pickle.dumps(UnsupportedFormatError("nope")))
    assert type(err) is UnsupportedFormatError and err.code == 12300 and str(err) == "nope"


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64", "mp3"),  # MPEG-1 layer III frame sync
        (b"\xff\xf1\x50\x80", None),  # ADTS AAC: layer bits 00
        (b"OggS\x00\x02", None),
    ],
)
def test_sniff_format(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head) == fmt


def test_mp3_behind_a_large_id3_tag() -> None:
    # Album art makes ID3v2 tags of hundreds of kB; the small open probe must still find the first frame.
    size = 300_000
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    data = b"ID3\x04\x00\x00" + syncsafe + bytes(size) + make_mp3(1000.0, 1.0)
    pcm = decode_audio(data)
    assert abs(pcm_seconds(pcm) - 1.0) <= FRAME_SECONDS and abs(peak_hz(pcm) - 1000) < 2
