"""``<Dial>`` and its nouns (restcomm-behaviour.md §5 "Dial"): parsed and validated now, run by the engine later.

Body text without nouns is shorthand for one ``<Number>``. At most :data:`MAX_NOUNS` nouns ring at once (forking).
An invalid ``callerId`` stops the call (Restcomm's 13214): the verb becomes a :class:`Halt`.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

from callplane.rcml.attrs import NOUN_NAMES, UNSUPPORTED, AttributeReader, element_text, shorten
from callplane.rcml.errors import DIAL_CALLER_ID, DIAL_METHOD, DIAL_TIME_LIMIT, DIAL_TIMEOUT, SCHEMA, SchemaError
from callplane.rcml.verbs import (
    DIAL_EVENTS,
    Client,
    Conference,
    Dial,
    Halt,
    Method,
    Notice,
    Noun,
    Number,
    Sip,
    StatusCallback,
)

__all__ = ["MAX_NOUNS", "build_dial"]

MAX_NOUNS = 10
_CALLER_ID = re.compile(r"[A-Za-z0-9+*#._~!$&'()=,;:@%/-]{1,128}")
_SEND_DIGITS = re.compile(r"[0-9*#wW]{1,32}")
_SIP_URI = re.compile(r"(?i)sips?:[^\s<>\"]+")
_SPLIT = re.compile(r"[\s,]+")
# The verb names, to tell "a verb out of place" (skipped) from "not RCML at all" (refused).
_VERB_NAMES = frozenset({"Say", "Play", "Pause", "Gather", "Record", "Redirect", "Hangup", "Reject", "Dial"})


def build_dial(element: Element, base: str, notices: list[Notice]) -> Dial | Halt | None:
    """The Dial verb of ``element``; None (with a warning) when it has nothing to dial."""
    read = AttributeReader("Dial", element.attrib, base, notices)
    action = read.url("action")
    method = read.method("method", DIAL_METHOD)
    timeout = read.integer("timeout", 30, DIAL_TIMEOUT, minimum=1)
    time_limit = read.integer("timeLimit", 14400, DIAL_TIME_LIMIT, minimum=1)
    record = read.boolean("record", False, SCHEMA)
    hangup_on_star = read.boolean("hangupOnStar", False, SCHEMA)
    caller_id = read.raw("callerId")
    if caller_id is not None and _CALLER_ID.fullmatch(caller_id) is None:
        return Halt(DIAL_CALLER_ID, f'<Dial> callerId="{shorten(caller_id)}" is invalid')

    nouns: list[Noun] = []
    for child in element:
        tag = child.tag
        if tag in NOUN_NAMES:
            noun = _NOUNS[tag](child, base, notices)
            if noun is not None:
                nouns.append(noun)
        elif tag in UNSUPPORTED or tag in _VERB_NAMES:
            notices.append(Notice(SCHEMA, f"<{tag}> cannot be dialled; skipped"))
        else:
            raise SchemaError(f"<{shorten(tag)}> is not an RCML noun")
    if not nouns and len(element) == 0:
        text = element_text(element)
        if text:
            nouns.append(Number(text))
    if not nouns:
        notices.append(Notice(SCHEMA, "<Dial> has nothing to dial; skipped"))
        return None
    if len(nouns) > MAX_NOUNS:
        notices.append(Notice(SCHEMA, f"<Dial> has {len(nouns)} nouns; only the first {MAX_NOUNS} ring"))
        del nouns[MAX_NOUNS:]
    return Dial(tuple(nouns), action, method, timeout, time_limit, caller_id, record, hangup_on_star)


def _status_callback(read: AttributeReader) -> StatusCallback | None:
    """statusCallback, statusCallbackMethod and statusCallbackEvent (only ``completed`` when none is named)."""
    events: list[str] = []
    for event in _SPLIT.split(read.raw("statusCallbackEvent") or ""):
        if event.lower() in DIAL_EVENTS:
            if event.lower() not in events:
                events.append(event.lower())
        elif event:
            read.invalid("statusCallbackEvent", event, SCHEMA, None)
    url = read.url("statusCallback")
    method = read.method("statusCallbackMethod", DIAL_METHOD)
    if url is None:
        return None
    return StatusCallback(url, method, tuple(events) or ("completed",))


def _callbacks(read: AttributeReader) -> tuple[str | None, Method, StatusCallback | None]:
    """The attributes Number, Client and Sip share: url and method (screening RCML on the callee), status callback."""
    return read.url("url"), read.method("method", DIAL_METHOD), _status_callback(read)


def _missing(noun: str, notices: list[Notice]) -> None:
    notices.append(Notice(SCHEMA, f"<{noun}> names nobody to dial; skipped"))


def _number(element: Element, base: str, notices: list[Notice]) -> Number | None:
    read = AttributeReader("Number", element.attrib, base, notices)
    url, method, callback = _callbacks(read)
    send_digits = read.pattern("sendDigits", _SEND_DIGITS, "", SCHEMA) or None
    text = element_text(element)
    if not text:
        _missing("Number", notices)
        return None
    return Number(text, url, method, callback, send_digits)


def _client(element: Element, base: str, notices: list[Notice]) -> Client | None:
    read = AttributeReader("Client", element.attrib, base, notices)
    url, method, callback = _callbacks(read)
    name = element_text(element) or read.raw("name")
    if not name:
        _missing("Client", notices)
        return None
    return Client(name, url, method, callback)


def _sip(element: Element, base: str, notices: list[Notice]) -> Sip | None:
    read = AttributeReader("Sip", element.attrib, base, notices)
    url, method, callback = _callbacks(read)
    uri = element_text(element)
    if not uri:
        _missing("Sip", notices)
        return None
    if _SIP_URI.fullmatch(uri) is None:
        notices.append(Notice(SCHEMA, f'<Sip> "{shorten(uri)}" is not a sip: or sips: URI; skipped'))
        return None
    return Sip(uri, read.raw("username"), read.raw("password"), url, method, callback)


def _conference(element: Element, base: str, notices: list[Notice]) -> Conference | None:
    read = AttributeReader("Conference", element.attrib, base, notices)
    callback = _status_callback(read)
    conference = Conference(
        name=element_text(element),
        muted=read.boolean("muted", False, SCHEMA),
        beep=read.boolean("beep", True, SCHEMA),
        start_conference_on_enter=read.boolean("startConferenceOnEnter", True, SCHEMA),
        end_conference_on_exit=read.boolean("endConferenceOnExit", False, SCHEMA),
        wait_url=read.url("waitUrl"),
        wait_method=read.method("waitMethod", SCHEMA),
        max_participants=read.integer("maxParticipants", 40, SCHEMA, minimum=1),
        status_callback=callback,
    )
    if not conference.name:
        _missing("Conference", notices)
        return None
    return conference


_NOUNS = {"Number": _number, "Client": _client, "Sip": _sip, "Conference": _conference}
