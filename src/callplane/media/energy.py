"""Silence/energy detection on 20 ms frames: frame level in dBFS and a voice/silence timer with hangover."""

from __future__ import annotations

import math

import numpy as np

from callplane.media.sources import FRAME_SECONDS

__all__ = ["EnergyDetector", "frame_dbfs", "frame_rms"]


def frame_rms(frame: bytes) -> float:
    """Root mean square of an s16le frame (0.0 for an empty one)."""
    if not frame:
        return 0.0
    x = np.frombuffer(frame, dtype="<i2").astype(np.int64)
    return math.sqrt(int(np.dot(x, x)) / len(x))


def frame_dbfs(frame: bytes) -> float:
    """RMS level of an s16le frame in dB relative to full scale (32768); silence is -inf."""
    rms = frame_rms(frame)
    if rms <= 0:
        return -math.inf
    return 20 * math.log10(rms / 32768.0)


class EnergyDetector:
    """Tracks voice vs silence (a :class:`~callplane.media.sources.Sink`).

    A frame is voice when its level is at or above ``threshold_dbfs``. ``silent_for(now)`` is the time since the
    last voice frame (or since the detector started, if none yet) - what Record's ``timeout`` needs. ``start=None``
    starts the clock with the first frame written (it covers the 20 ms before its ``now``): the caller need not
    know the clock the frames are stamped with.
    """

    def __init__(self, threshold_dbfs: float = -45.0, start: float | None = None) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._threshold_rms = 32768.0 * 10 ** (threshold_dbfs / 20)
        self.last_voice: float | None = None
        self.started = start
        self.voice_frames = 0
        self.frames = 0

    def is_voice(self, frame: bytes) -> bool:
        return frame_rms(frame) >= self._threshold_rms

    def write(self, frame: bytes, now: float) -> None:
        self.begin(now)
        self.frames += 1
        if self.is_voice(frame):
            self.voice_frames += 1
            self.last_voice = now

    def begin(self, now: float) -> None:
        """Start the clock at the frame written at ``now``, unless it has started."""
        if self.started is None:
            self.started = now - FRAME_SECONDS

    def silent_for(self, now: float) -> float:
        since = self.last_voice if self.last_voice is not None else self.started
        return 0.0 if since is None else now - since
