"""What a call's RCML interpreter asks the engine to do: frozen, slotted values (no live objects).

A command that starts an operation with an outcome carries a ``ref``; the engine echoes it in the event that reports
the outcome (Fetch -> DocumentLoaded/FetchFailed, Say/Play -> PromptDone, StartRecord -> RecordingDone,
Dial -> DialDone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from callplane.rcml import verbs
from callplane.rcml.verbs import Level

__all__ = [
    "Answer",
    "Command",
    "Dial",
    "Fetch",
    "Hangup",
    "Notify",
    "Play",
    "Reject",
    "Say",
    "Silence",
    "StartGather",
    "StartRecord",
    "StopDial",
    "StopGather",
    "StopPrompt",
    "StopRecord",
]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Request RCML from ``url``. ``params`` are the verb's own (Digits, RecordingUrl...), in order; the engine
    adds the call parameters of restcomm-behaviour.md §4.2 and answers with DocumentLoaded or FetchFailed."""

    ref: int
    url: str
    method: Literal["GET", "POST"]
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the (inbound, still ringing) call; the engine reports Answered."""


@dataclass(frozen=True, slots=True)
class Say:
    """Speak ``text`` ``loop`` times (0: until StopPrompt); the engine reports PromptDone(ref)."""

    ref: int
    text: str
    voice: str
    language: str
    loop: int


@dataclass(frozen=True, slots=True)
class Play:
    """Play the audio at ``url`` ``loop`` times (0: until StopPrompt); the engine reports PromptDone(ref)."""

    ref: int
    url: str
    loop: int


@dataclass(frozen=True, slots=True)
class Silence:
    """Nothing is played for ``seconds`` (a Pause). The interpreter's own timer ends it; the engine need not act."""

    seconds: int


@dataclass(frozen=True, slots=True)
class StopPrompt:
    """Stop the Say or Play ``ref`` now (barge-in, live modification); no PromptDone follows."""

    ref: int


@dataclass(frozen=True, slots=True)
class StartGather:
    """DTMF collection begins: keys go to the interpreter as DigitReceived until StopGather."""

    finish_on_key: str
    num_digits: int | None
    timeout: int


@dataclass(frozen=True, slots=True)
class StopGather:
    """DTMF collection ended."""


@dataclass(frozen=True, slots=True)
class StartRecord:
    """Record the caller; the engine ends it on ``timeout`` s of silence (0: never), on a key of ``finish_on_key``,
    or after ``max_length`` s, and reports RecordingDone(ref). ``beep``: play a beep first."""

    ref: int
    max_length: int
    timeout: int
    finish_on_key: str
    beep: bool


@dataclass(frozen=True, slots=True)
class StopRecord:
    """Stop the recording ``ref`` now (live modification); the engine keeps what was recorded."""

    ref: int


@dataclass(frozen=True, slots=True)
class Dial:
    """Run the Dial verb; the engine reports DialDone(ref) with the action parameters."""

    ref: int
    verb: verbs.Dial


@dataclass(frozen=True, slots=True)
class StopDial:
    """End the Dial ``ref`` now (live modification): hang up the dialled leg(s)."""

    ref: int


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call (BYE once answered; before the answer the engine picks the final response).

    ``end_of_document`` tells the document running out from a ``<Hangup/>`` (or a fatal error): a screening
    document on a ``<Dial>`` callee that runs out lets the call be bridged (it takes no part in equality)."""

    end_of_document: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the unanswered call: ``rejected`` (603 Decline) or ``busy`` (486 Busy Here)."""

    reason: Literal["rejected", "busy"]


@dataclass(frozen=True, slots=True)
class Notify:
    """Record a Notification for the call (Notifications API: ``error_code``, ``message_text``, ``log``)."""

    code: int
    message: str
    level: Level


Command = (
    Fetch
    | Answer
    | Say
    | Play
    | Silence
    | StopPrompt
    | StartGather
    | StopGather
    | StartRecord
    | StopRecord
    | Dial
    | StopDial
    | Hangup
    | Reject
    | Notify
)
