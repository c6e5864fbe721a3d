"""Recorder: a sink that keeps 8 kHz 16-bit PCM in memory and renders a WAV at the end.

A leg's recording is mono (:meth:`Recorder.write`, as a sink). A bridge's recording is two-channel
(:meth:`Recorder.write_pair`, fed by the bridge: left and right are the two sides); it honours ``max_length_s``
only, since a bridged call has no single speaker whose silence or key could end it.

Finishes on maximum length, on a silence timeout (energy detector), on a finish-on-key digit (``on_digit``) or
when stopped. Audio is buffered in memory (16 kB/s, a one-hour cap is 58 MB) so that nothing blocks the media
loop; the file is written once, at the end, by the adapter in a worker thread (``aio.MediaEngine`` uses
``asyncio.to_thread(recorder.save, path)``).
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from callplane.media.energy import EnergyDetector
from callplane.media.sources import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE

__all__ = ["Recorder", "wav_bytes"]


def wav_bytes(pcm: bytes, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    """A RIFF/WAVE file holding s16le PCM (``channels`` interleaved)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


class Recorder:
    """Records frames until a finish condition. ``finished`` is the reason once done, else ``None``.

    - ``max_length_s``: stop after this much audio (RCML ``maxLength``; ``None`` = no limit).
    - ``silence_timeout_s``: stop after this much silence since the last voice (RCML ``timeout``; counted from
      the start too, so a caller who never speaks ends the recording). The start is the first frame written,
      unless ``start`` gives it on the clock of the ``now`` values the frames come with.
    - ``finish_on_key``: digits that stop the recording (RCML ``finishOnKey``), fed through :meth:`on_digit`.
    - ``trim_silence``: drop leading and trailing silent frames from the result (RCML ``trim``).
    """

    def __init__(
        self,
        *,
        max_length_s: float | None = 3600.0,
        silence_timeout_s: float | None = None,
        finish_on_key: str = "",
        trim_silence: bool = False,
        threshold_dbfs: float = -45.0,
        start: float | None = None,
    ) -> None:
        self.max_frames = None if max_length_s is None else max(1, round(max_length_s / FRAME_SECONDS))
        self.silence_timeout_s = silence_timeout_s
        self.finish_on_key = finish_on_key
        self.trim_silence = trim_silence
        self.detector = EnergyDetector(threshold_dbfs, start)
        self.finished: str | None = None
        self.digit: str | None = None
        self._frames: list[bytes] = []
        self._voiced: list[bool] = []
        self.channels = 1  # 2 once :meth:`write_pair` is used

    def write(self, frame: bytes, now: float) -> None:
        if self.finished is not None:
            return
        self.detector.begin(now)
        self._frames.append(frame)
        voiced = self.detector.is_voice(frame)
        self._voiced.append(voiced)
        self.detector.frames += 1
        if voiced:
            self.detector.last_voice = now
            self.detector.voice_frames += 1
        if self.max_frames is not None and len(self._frames) >= self.max_frames:
            self.finished = "max-length"
        elif self.silence_timeout_s is not None and self.detector.silent_for(now) >= self.silence_timeout_s - 1e-9:
            self.finished = "silence"

    def write_pair(self, left: bytes, right: bytes, now: float) -> None:
        """One 20 ms frame of each side of a bridge, kept as one two-channel frame. Only ``max_length_s`` can end
        it (besides :meth:`stop`); trimming keeps the frames where either side speaks."""
        if self.finished is not None:
            return
        self.channels = 2
        self.detector.begin(now)
        pair = np.empty(2 * FRAME_SAMPLES, dtype="<i2")
        pair[0::2] = np.frombuffer(left, dtype="<i2")
        pair[1::2] = np.frombuffer(right, dtype="<i2")
        self._frames.append(pair.tobytes())
        self._voiced.append(self.detector.is_voice(left) or self.detector.is_voice(right))
        self.detector.frames += 1
        if self.max_frames is not None and len(self._frames) >= self.max_frames:
            self.finished = "max-length"

    def on_digit(self, digit: str) -> bool:
        """Feed a received digit; returns True if it finished the recording."""
        if self.finished is None and digit in self.finish_on_key:
            self.finished = "key"
            self.digit = digit
            return True
        return False

    def stop(self) -> None:
        if self.finished is None:
            self.finished = "stopped"

    def _kept(self) -> list[bytes]:
        if not self.trim_silence:
            return self._frames
        idx = [i for i, v in enumerate(self._voiced) if v]
        if not idx:
            return []
        return self._frames[idx[0] : idx[-1] + 1]

    def pcm(self) -> bytes:
        return b"".join(self._kept())

    @property
    def duration_s(self) -> float:
        """Seconds of audio in the result (after trimming)."""
        return len(self._kept()) * FRAME_SECONDS

    def wav(self) -> bytes:
        return wav_bytes(self.pcm(), channels=self.channels)

    def save(self, path: str | Path) -> float:
        """Write the WAV file (blocking: call it from a worker thread) and return the duration."""
        Path(path).write_bytes(self.wav())
        return self.duration_s
