"""Typed RCML verbs and nouns (restcomm-behaviour.md §5): frozen, slotted values with every default applied.

The builders in :mod:`callplane.rcml.build` and :mod:`callplane.rcml.dial` make these from XML; an attribute that
fails validation is replaced by its default and reported as a :class:`Notice`. URLs are already resolved against the
document's URL and are absolute http(s). ``loop == 0`` means "until interrupted".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DIAL_EVENTS",
    "Client",
    "Conference",
    "Dial",
    "Document",
    "Gather",
    "Halt",
    "Hangup",
    "Level",
    "Method",
    "Notice",
    "Noun",
    "Number",
    "Pause",
    "Play",
    "Prompt",
    "Record",
    "Redirect",
    "Reject",
    "Say",
    "Sip",
    "StatusCallback",
    "Verb",
]

Level = Literal["error", "warning"]
Method = Literal["GET", "POST"]
DIAL_EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True, slots=True)
class Notice:
    """A Notification to record (Notifications API ``error_code``, ``message_text``, ``log`` level)."""

    code: int
    message: str
    level: Level = "warning"


@dataclass(frozen=True, slots=True)
class Say:
    """Speak ``text``. ``voice`` is ``man`` or ``woman``; ``language`` a tag such as ``en`` or ``en-GB``."""

    text: str
    voice: str = "man"
    language: str = "en"
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Play:
    """Play the audio at ``url`` (WAV or MP3)."""

    url: str
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence for ``length`` seconds (before the answer, it delays the answer)."""

    length: int = 1


Prompt = Say | Play | Pause


@dataclass(frozen=True, slots=True)
class Gather:
    """Collect DTMF while the nested prompts play (barge-in). ``num_digits`` None means unlimited."""

    action: str | None = None
    method: Method = "POST"
    timeout: int = 5
    finish_on_key: str = "#"
    num_digits: int | None = None
    prompts: tuple[Prompt, ...] = ()


@dataclass(frozen=True, slots=True)
class Record:
    """Record the caller. ``finish_on_key`` "" means no key ends it; ``timeout`` 0 means no silence limit."""

    action: str | None = None
    method: Method = "POST"
    timeout: int = 5
    finish_on_key: str = "1234567890*#"
    max_length: int = 3600
    play_beep: bool = True


@dataclass(frozen=True, slots=True)
class Redirect:
    """Fetch ``url`` and run it instead of the rest of this document; ``url`` None means "the next verb"."""

    url: str | None
    method: Method = "POST"


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse an unanswered call: ``rejected`` (603 Decline) or ``busy`` (486 Busy Here)."""

    reason: Literal["rejected", "busy"] = "rejected"


@dataclass(frozen=True, slots=True)
class Halt:
    """A verb that must not run as written (e.g. Dial with an invalid callerId): notify at error level, hang up."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """Call-progress callbacks of one dialled leg (restcomm-behaviour.md §4.1): where, how, and which events."""

    url: str
    method: Method = "POST"
    events: tuple[str, ...] = ("completed",)


@dataclass(frozen=True, slots=True)
class Number:
    """A telephone number; ``number`` may carry ``?X-h=v`` custom headers, which the engine splits off."""

    number: str
    url: str | None = None
    method: Method = "POST"
    status_callback: StatusCallback | None = None
    send_digits: str | None = None


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client login."""

    name: str
    url: str | None = None
    method: Method = "POST"
    status_callback: StatusCallback | None = None


@dataclass(frozen=True, slots=True)
class Sip:
    """A SIP URI (``sip:`` or ``sips:``), with optional digest credentials."""

    uri: str
    username: str | None = None
    password: str | None = None
    url: str | None = None
    method: Method = "POST"
    status_callback: StatusCallback | None = None


@dataclass(frozen=True, slots=True)
class Conference:
    """A conference room, scoped to the account by the engine."""

    name: str
    muted: bool = False
    beep: bool = True
    start_conference_on_enter: bool = True
    end_conference_on_exit: bool = False
    wait_url: str | None = None
    wait_method: Method = "POST"
    max_participants: int = 40
    status_callback: StatusCallback | None = None


Noun = Number | Client | Sip | Conference


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect the caller to the first of ``nouns`` that answers (the engine runs it)."""

    nouns: tuple[Noun, ...]
    action: str | None = None
    method: Method = "POST"
    timeout: int = 30
    time_limit: int = 14400
    caller_id: str | None = None
    record: bool = False
    hangup_on_star: bool = False


Verb = Say | Play | Pause | Gather | Record | Redirect | Hangup | Reject | Dial | Halt


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed RCML document: its URL (the base of relative URLs), its verbs, and what validation reported."""

    url: str
    verbs: tuple[Verb, ...]
    notices: tuple[Notice, ...] = ()
