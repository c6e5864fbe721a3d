"""Decode ``<Play>`` audio (WAV, MP3) to the engine's format: 8 kHz mono signed 16-bit little-endian PCM.

These functions are CPU-bound and blocking: they run in the worker pool (``media/workers.py``), never on the
event loop. The result is a plain ``bytes`` buffer that a :class:`~callplane.media.sources.PcmSource` slices into
20 ms frames.

Security: the container format is chosen from the file's magic bytes (RIFF/WAVE or MP3) and handed to FFmpeg
explicitly, so untrusted bytes are never probed by every demuxer FFmpeg has (playlist demuxers such as HLS or
concat would otherwise open further files or URLs). Decoded length is capped (``max_seconds``) so a small
compressed file cannot expand into gigabytes of PCM.

Errors (every one a :class:`PlaybackError`, which carries a Restcomm notification code hint)::

    MediaError
    └── PlaybackError                 code: suggested Restcomm notification code
        └── DecodeError               12400: the bytes are not playable audio
            ├── UnsupportedFormatError 12300: not WAV or MP3
            └── TooLongError           12400: decoded audio exceeds the cap
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import av
import av.container
import av.error

from callplane.core.errors import MediaError
from callplane.media.sources import SAMPLE_RATE

__all__ = [
    "DECODER_VERSION",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_SECONDS",
    "DecodeError",
    "PlaybackError",
    "TooLongError",
    "UnsupportedFormatError",
    "decode_audio",
    "decode_file",
    "pcm_seconds",
    "sniff_format",
]

#: Part of every decode cache key: bump it when the decode output changes (resampler settings, format rules).
DECODER_VERSION = "pcm8k-s16le-v1"
#: One hour, the same cap Restcomm puts on a recording (``maxLength`` 3600 s).
DEFAULT_MAX_SECONDS = 3600.0
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
_OPEN_OPTIONS = {"probesize": "65536"}


class PlaybackError(MediaError):
    """A prompt could not be produced. ``code`` is the Restcomm notification code the RCML layer may report."""

    default_code = 12400

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code if code is not None else self.default_code

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised inside worker processes: keep ``code`` across pickling.
        return (type(self), (str(self), self.code))


class DecodeError(PlaybackError):
    """The bytes are not decodable audio."""


class UnsupportedFormatError(DecodeError):
    """Neither WAV nor MP3 (by magic bytes)."""

    default_code = 12300


class TooLongError(DecodeError):
    """The decoded audio is longer than the configured cap."""


def sniff_format(head: bytes) -> str | None:
    """The FFmpeg demuxer name for the first bytes of a file: ``"wav"``, ``"mp3"`` or ``None``.

    WAV: RIFF/RIFX/RF64 container with a WAVE form type. MP3: an ID3v2 tag, or an MPEG audio frame sync
    (11 set bits) with layer III/II/I bits that are not the reserved value.
    """
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0:
        return "mp3"
    return None


def pcm_seconds(pcm: bytes) -> float:
    """Duration of an 8 kHz s16le mono buffer."""
    return len(pcm) / 2 / SAMPLE_RATE


def decode_audio(data: bytes, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> bytes:
    """Decode a WAV or MP3 file held in memory to 8 kHz mono s16le PCM (any rate, channel count, sample format).

    Blocking and CPU-bound: call it through the worker pool.
    """
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise UnsupportedFormatError("unsupported audio format (expected WAV or MP3)")
    try:
        # The format is known and the stream parameters are in the first header: a small probe is enough
        # (the default 5 MB probe made opening a 5 s WAV cost 20 ms, twice the whole MP3 decode).
        container = av.open(io.BytesIO(data), mode="r", format=fmt, options=_OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        raise DecodeError(f"cannot read {fmt} data: {exc}") from None
    try:
        return _decode_container(container, fmt, max_seconds)
    finally:
        container.close()


def decode_file(
    path: str | os.PathLike[str],
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> bytes:
    """Decode a local WAV or MP3 file (see :func:`decode_audio`)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise DecodeError(f"{p.name}: file is {size} bytes, over the {max_bytes} byte limit")
        data = p.read_bytes()
    except OSError as exc:
        raise DecodeError(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode_audio(data, max_seconds=max_seconds)


def _decode_container(container: av.container.InputContainer, fmt: str, max_seconds: float) -> bytes:
    if not container.streams.audio:
        raise DecodeError(f"{fmt} data has no audio stream")
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    limit = int(max_seconds * SAMPLE_RATE) * 2
    chunks: list[bytes] = []
    total = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                total += _append(chunks, out)
            if total > limit:
                raise TooLongError(f"audio is longer than {max_seconds:g} s")
        for out in resampler.resample(None):
            total += _append(chunks, out)
    except av.error.FFmpegError as exc:
        raise DecodeError(f"corrupt {fmt} data: {exc}") from None
    if total > limit:
        raise TooLongError(f"audio is longer than {max_seconds:g} s")
    return b"".join(chunks)


def _append(chunks: list[bytes], frame: av.AudioFrame) -> int:
    # to_ndarray drops the plane padding; shape is (1, samples) for packed mono s16.
    samples = frame.to_ndarray().astype("<i2", copy=False).tobytes()
    chunks.append(samples)
    return len(samples)
