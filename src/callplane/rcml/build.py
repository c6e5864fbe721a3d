"""From a parsed ``<Response>`` element to typed verbs (restcomm-behaviour.md §5).

Rules, in order of severity:

- An element name RCML does not have (anywhere a verb or noun may stand) refuses the whole document
  (:class:`SchemaError`, 12200): the engine notifies and hangs up, like Restcomm's parser.
- A Restcomm verb or noun callplane does not run (Sms, Email, Fax, Enqueue, Queue, ...) is skipped with a warning.
- A verb that cannot run at all (a Say without text, a Play without a usable URL) is skipped with a warning.
- An invalid attribute value gets its default and a warning with the verb's code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.etree.ElementTree import Element

from callplane.rcml.attrs import NOUN_NAMES, UNSUPPORTED, AttributeReader, element_text, shorten
from callplane.rcml.dial import build_dial
from callplane.rcml.errors import (
    BAD_URL,
    GATHER_FINISH_ON_KEY,
    GATHER_METHOD,
    GATHER_NESTING,
    GATHER_NUM_DIGITS,
    GATHER_TIMEOUT,
    NO_ASR,
    PAUSE_LENGTH,
    PLAY_LOOP,
    RECORD_FINISH_ON_KEY,
    RECORD_MAX_LENGTH,
    RECORD_METHOD,
    RECORD_TIMEOUT,
    REDIRECT_METHOD,
    SAY_LOOP,
    SAY_TEXT,
    SAY_VOICE,
    SCHEMA,
    SchemaError,
)
from callplane.rcml.verbs import (
    Document,
    Gather,
    Hangup,
    Notice,
    Pause,
    Play,
    Prompt,
    Record,
    Redirect,
    Reject,
    Say,
    Verb,
)

__all__ = ["build_document"]

_KEYS = re.compile(r"[*#0-9]{1,12}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}")

Notices = list[Notice]


def build_document(root: Element, url: str) -> Document:
    """The verbs of ``root`` (a ``<Response>``), with relative URLs resolved against ``url``."""
    notices: Notices = []
    verbs: list[Verb] = []
    for child in root:
        verb = _build_verb(child, url, notices)
        if verb is not None:
            verbs.append(verb)
    return Document(url, tuple(verbs), tuple(notices))


def _build_verb(element: Element, base: str, notices: Notices) -> Verb | None:
    tag = element.tag
    builder = _VERBS.get(tag)
    if builder is not None:
        return builder(element, base, notices)
    if tag in UNSUPPORTED:
        notices.append(Notice(SCHEMA, f"<{tag}> is not supported by callplane; skipped"))
        return None
    if tag in NOUN_NAMES:
        notices.append(Notice(SCHEMA, f"<{tag}> is a noun of <Dial>, not a verb; skipped"))
        return None
    raise SchemaError(f"<{shorten(tag)}> is not an RCML verb")


def _say(element: Element, base: str, notices: Notices) -> Say | None:
    read = AttributeReader("Say", element.attrib, base, notices)
    voice = read.choice("voice", ("man", "woman"), "man", SAY_VOICE)
    language = read.pattern("language", _LANGUAGE, "en", SAY_VOICE)
    loop = read.integer("loop", 1, SAY_LOOP)
    text = element_text(element)
    if not text:
        notices.append(Notice(SAY_TEXT, "<Say> has no text; skipped"))
        return None
    return Say(text, voice, language, loop)


def _play(element: Element, base: str, notices: Notices) -> Play | None:
    read = AttributeReader("Play", element.attrib, base, notices)
    loop = read.integer("loop", 1, PLAY_LOOP)
    text = element_text(element)
    if not text:
        notices.append(Notice(BAD_URL, "<Play> has no URL; skipped"))
        return None
    url = read.resolve("URL", text)
    return None if url is None else Play(url, loop)


def _pause(element: Element, base: str, notices: Notices) -> Pause:
    read = AttributeReader("Pause", element.attrib, base, notices)
    return Pause(read.integer("length", 1, PAUSE_LENGTH, minimum=1))


def _gather(element: Element, base: str, notices: Notices) -> Gather:
    read = AttributeReader("Gather", element.attrib, base, notices)
    if "speech" in (read.raw("input") or "").lower():
        notices.append(Notice(NO_ASR, "<Gather> speech input is not supported; collecting DTMF only"))
    action = read.url("action")
    method = read.method("method", GATHER_METHOD)
    timeout = read.integer("timeout", 5, GATHER_TIMEOUT, minimum=1)
    finish_on_key = read.pattern("finishOnKey", _KEYS, "#", GATHER_FINISH_ON_KEY)
    num_digits = read.optional_integer("numDigits", GATHER_NUM_DIGITS)
    prompts: list[Prompt] = []
    for child in element:
        tag = child.tag
        if tag in ("Say", "Play", "Pause"):
            prompt = _PROMPTS[tag](child, base, notices)
            if prompt is not None:
                prompts.append(prompt)
        elif tag in _VERBS or tag in UNSUPPORTED or tag in NOUN_NAMES:
            notices.append(Notice(GATHER_NESTING, f"<{tag}> cannot be nested in <Gather>; skipped"))
        else:
            raise SchemaError(f"<{shorten(tag)}> is not an RCML verb")
    return Gather(action, method, timeout, finish_on_key, num_digits, tuple(prompts))


def _record(element: Element, base: str, notices: Notices) -> Record:
    read = AttributeReader("Record", element.attrib, base, notices)
    finish = read.raw("finishOnKey")
    if finish is None:
        finish_on_key = "1234567890*#"  # §5: by default any key ends the recording
    elif finish == "-1":
        finish_on_key = ""
    else:
        finish_on_key = read.pattern("finishOnKey", _KEYS, "#", RECORD_FINISH_ON_KEY)
    for name in ("transcribe", "transcribeCallback"):
        if read.raw(name) not in (None, "false"):
            notices.append(Notice(SCHEMA, f"<Record> {name} is not supported; recording without transcription"))
    return Record(
        action=read.url("action"),
        method=read.method("method", RECORD_METHOD),
        timeout=read.integer("timeout", 5, RECORD_TIMEOUT),
        finish_on_key=finish_on_key,
        max_length=read.integer("maxLength", 3600, RECORD_MAX_LENGTH, minimum=1),
        play_beep=read.boolean("playBeep", True, SCHEMA),
    )


def _redirect(element: Element, base: str, notices: Notices) -> Redirect | None:
    read = AttributeReader("Redirect", element.attrib, base, notices)
    method = read.method("method", REDIRECT_METHOD)
    text = element_text(element)
    if not text:
        return Redirect(None, method)
    url = read.resolve("URL", text)
    return None if url is None else Redirect(url, method)


def _hangup(element: Element, base: str, notices: Notices) -> Hangup:
    return Hangup()


def _reject(element: Element, base: str, notices: Notices) -> Reject:
    read = AttributeReader("Reject", element.attrib, base, notices)
    return Reject(read.choice("reason", ("rejected", "busy"), "rejected", SCHEMA))


_PROMPTS: dict[str, Callable[[Element, str, Notices], Prompt | None]] = {"Say": _say, "Play": _play, "Pause": _pause}
_VERBS: dict[str, Callable[[Element, str, Notices], Verb | None]] = {
    "Say": _say,
    "Play": _play,
    "Pause": _pause,
    "Gather": _gather,
    "Record": _record,
    "Redirect": _redirect,
    "Hangup": _hangup,
    "Reject": _reject,
    "Dial": build_dial,
}
