"""What the engine tells a call's RCML interpreter: frozen, slotted values (no live objects).

Events that answer a command carry that command's ``ref``; the interpreter drops one whose ``ref`` is not the
operation it is waiting for (a prompt that ended as a digit stopped it, a fetch overtaken by a live modification).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from callplane.rcml.verbs import Document

__all__ = [
    "Answered",
    "CallEnded",
    "DialDone",
    "DigitReceived",
    "DocumentLoaded",
    "Event",
    "FetchFailed",
    "PromptDone",
    "RecordingDone",
    "Redirected",
]


@dataclass(frozen=True, slots=True)
class DocumentLoaded:
    """The fetch ``ref`` returned RCML (the engine ran :func:`callplane.rcml.parser.document_for_response`)."""

    ref: int
    document: Document


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """The fetch ``ref`` failed. ``code``: 11200/11205/11206, 21402 for a 404, or the parser's RcmlError code."""

    ref: int
    url: str
    reason: str
    code: int = 11200


@dataclass(frozen=True, slots=True)
class Answered:
    """The call is answered (the engine sent or received the 200 OK)."""


@dataclass(frozen=True, slots=True)
class PromptDone:
    """The Say or Play ``ref`` finished all its loops (never sent for a prompt stopped by StopPrompt)."""

    ref: int


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """The caller pressed a DTMF key (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""

    digit: str


@dataclass(frozen=True, slots=True)
class RecordingDone:
    """The recording ``ref`` ended; ``url`` is its absolute RecordingUrl (None when nothing was kept).

    ``reason``: ``silence`` (timeout), ``key`` (with ``digit``), ``max`` (maxLength), ``hangup`` (the caller hung
    up; the call is over), or ``stopped`` (after StopRecord).
    """

    ref: int
    duration: float
    reason: Literal["silence", "key", "max", "hangup", "stopped"]
    digit: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class DialDone:
    """The Dial ``ref`` ended; ``params`` are its action parameters (DialCallStatus, DialCallSid, ...)."""

    ref: int
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over (the caller hung up, or the API completed it)."""


@dataclass(frozen=True, slots=True)
class Redirected:
    """Live call modification with a new Url: stop the current verb at once and run ``url`` instead.

    A ``fallback_url`` replaces the call's fallback from now on.
    """

    url: str
    method: Literal["GET", "POST"] = "POST"
    fallback_url: str | None = None
    fallback_method: Literal["GET", "POST"] = "POST"


Event = (
    DocumentLoaded
    | FetchFailed
    | Answered
    | PromptDone
    | DigitReceived
    | RecordingDone
    | DialDone
    | CallEnded
    | Redirected
)
