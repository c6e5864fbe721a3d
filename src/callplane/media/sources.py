"""Audio sources and the sink interface: the contract between the media engine and everything that makes sound.

A source yields 20 ms frames of 8 kHz mono signed 16-bit little-endian PCM (320 bytes, 160 samples). The ticker
pulls one frame per leg per tick; ``None`` means the source has finished (the leg then sends silence and reports
it). ``stop()`` ends a source early (barge-in); every later ``read()`` returns ``None``.

Sinks consume the same frames: ``write(frame, now)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
SILENCE = bytes(FRAME_BYTES)

__all__ = [
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "SILENCE",
    "PcmSource",
    "SilenceSource",
    "Sink",
    "Source",
    "ToneSource",
]


class Source(Protocol):
    """Something that produces 20 ms PCM frames."""

    def read(self) -> bytes | None:
        """The next 320-byte frame, or ``None`` when finished."""
        ...

    def stop(self) -> None:
        """Stop early (barge-in); later ``read()`` calls return ``None``."""
        ...


class Sink(Protocol):
    """Something that consumes 20 ms PCM frames (recorder, DTMF detector, energy detector)."""

    def write(self, frame: bytes, now: float) -> None: ...


class SilenceSource:
    """Silence, forever (``duration_s=None``) or for a fixed time (RCML ``<Pause>``)."""

    def __init__(self, duration_s: float | None = None) -> None:
        self._left: int | None = None if duration_s is None else max(0, round(duration_s / FRAME_SECONDS))
        self._stopped = False

    def read(self) -> bytes | None:
        if self._stopped:
            return None
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= 1
        return SILENCE

    def stop(self) -> None:
        self._stopped = True


class PcmSource:
    """A decoded buffer of 8 kHz s16le mono PCM, cut into frames; the last frame is padded with silence."""

    def __init__(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._pcm = pcm
        self._pos = 0
        self._stopped = False

    def read(self) -> bytes | None:
        if self._stopped or self._pos >= len(self._pcm):
            return None
        frame = self._pcm[self._pos : self._pos + FRAME_BYTES]
        self._pos += FRAME_BYTES
        if len(frame) < FRAME_BYTES:
            frame += bytes(FRAME_BYTES - len(frame))
        return frame

    def stop(self) -> None:
        self._stopped = True

    @property
    def position_s(self) -> float:
        """Seconds of audio handed out so far."""
        return min(self._pos, len(self._pcm)) / 2 / SAMPLE_RATE


def tone_pcm(freqs: Sequence[float], duration_s: float, amplitude: float = 0.3, start_sample: int = 0) -> bytes:
    """Sum of sines, each at ``amplitude`` (fraction of full scale, the sum is clipped), as s16le PCM."""
    n = max(0, round(duration_s * SAMPLE_RATE))
    t = (np.arange(n, dtype=np.float64) + start_sample) / SAMPLE_RATE
    acc = np.zeros(n, dtype=np.float64)
    for f in freqs:
        acc += np.sin(2 * math.pi * f * t)
    samples = np.clip(np.rint(acc * amplitude * 32767.0), -32768, 32767).astype("<i2")
    return samples.tobytes()


class ToneSource:
    """A tone made of one or more sine frequencies (beeps, DTMF, ringback); ``duration_s=None`` plays forever."""

    def __init__(self, freqs: Sequence[float], duration_s: float | None = None, amplitude: float = 0.3) -> None:
        self.freqs = tuple(freqs)
        self.amplitude = amplitude
        self._frames_left: int | None = None if duration_s is None else max(0, math.ceil(duration_s / FRAME_SECONDS))
        self._sample = 0
        self._stopped = False
        # A whole number of seconds is a whole number of periods for integer frequencies: cache one second
        # and cycle through it instead of computing sines every tick.
        if all(float(f).is_integer() for f in self.freqs):
            self._cycle: bytes | None = tone_pcm(self.freqs, 1.0, amplitude)
        else:
            self._cycle = None

    def read(self) -> bytes | None:
        if self._stopped:
            return None
        if self._frames_left is not None:
            if self._frames_left <= 0:
                return None
            self._frames_left -= 1
        if self._cycle is not None:
            off = (self._sample % SAMPLE_RATE) * 2
            frame = self._cycle[off : off + FRAME_BYTES]
        else:
            frame = tone_pcm(self.freqs, FRAME_SECONDS, self.amplitude, self._sample)
        self._sample += FRAME_SAMPLES
        return frame

    def stop(self) -> None:
        self._stopped = True
