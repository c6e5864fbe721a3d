"""Events the media layer reports to the engine: frozen, slotted, values only (no live objects)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DigitReceived",
    "DigitsSent",
    "LegFailed",
    "LegIdle",
    "MediaEvent",
    "RecordingFinished",
    "RemoteLatched",
    "SourceFinished",
]


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A DTMF digit ended. ``method`` is ``"rfc4733"`` or ``"inband"``; duration in milliseconds."""

    leg_id: str
    digit: str
    duration_ms: int
    method: str


@dataclass(frozen=True, slots=True)
class DigitsSent:
    """Every digit queued by ``send_digits`` has gone out (three end packets included)."""

    leg_id: str
    digits: str


@dataclass(frozen=True, slots=True)
class LegIdle:
    """No RTP arrived for ``idle_s`` seconds (RTP timeout): the call can be ended."""

    leg_id: str
    idle_s: float


@dataclass(frozen=True, slots=True)
class LegFailed:
    """The leg's own work raised or broke the frame contract (its source, sinks, or the bridge or conference it
    was in): it was taken out of the tick and closed; the other legs went on. ``reason`` names the error."""

    leg_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SourceFinished:
    """The leg's source returned ``None``; the leg now sends silence."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    """A recorder stopped. ``reason``: ``max-length``, ``silence``, ``key`` (with ``digit``), ``stopped``."""

    leg_id: str
    reason: str
    duration_s: float
    digit: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteLatched:
    """Symmetric RTP: the leg now sends to the address its peer's RTP actually comes from."""

    leg_id: str
    host: str
    port: int


MediaEvent = DigitReceived | DigitsSent | LegFailed | LegIdle | SourceFinished | RecordingFinished | RemoteLatched
