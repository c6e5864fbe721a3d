"""RCML errors and the Restcomm/Twilio notification codes the RCML layer reports.

The codes are those of restcomm-behaviour.md §4.3 and §5 (Restcomm reused Twilio's numbering); where Restcomm named no
code for a case, the Twilio code of the same meaning is used. ``docs/rcml.md`` lists them all.
"""

from __future__ import annotations

from callplane.core.errors import RcmlError

__all__ = [
    "BAD_CONTENT_TYPE",
    "BAD_URL",
    "DIAL_CALLER_ID",
    "DIAL_METHOD",
    "DIAL_TIME_LIMIT",
    "DIAL_TIMEOUT",
    "DOCUMENT_PARSE",
    "GATHER_FINISH_ON_KEY",
    "GATHER_METHOD",
    "GATHER_NESTING",
    "GATHER_NUM_DIGITS",
    "GATHER_TIMEOUT",
    "HTTP_RETRIEVAL",
    "NO_ASR",
    "PAUSE_LENGTH",
    "PLAY_LOOP",
    "RECORD_FINISH_ON_KEY",
    "RECORD_MAX_LENGTH",
    "RECORD_METHOD",
    "RECORD_TIMEOUT",
    "REDIRECT_LOOP",
    "REDIRECT_METHOD",
    "SAY_LOOP",
    "SAY_TEXT",
    "SAY_VOICE",
    "SCHEMA",
    "ContentTypeError",
    "DocumentError",
    "InterpreterStateError",
    "RcmlError",
    "SchemaError",
]

# Fetching (§4.3). The engine's webhook client reports 11200/11205/11206/21402 itself.
BAD_URL = 11100  # a URL that is not absolute http(s) after resolution
HTTP_RETRIEVAL = 11200  # any fetch failure the engine did not classify
REDIRECT_LOOP = 11215  # too many documents in a row without a verb that does anything
NO_ASR = 11001  # speech input asked for; callplane has no ASR
# Documents.
DOCUMENT_PARSE = 12100  # malformed, hostile (DTD, entities, size, depth), empty, root not <Response>
SCHEMA = 12200  # unknown element, element out of place, invalid value with no verb-specific code
BAD_CONTENT_TYPE = 12300
# Verbs (§5).
DIAL_METHOD = 13210
DIAL_TIMEOUT = 13212
DIAL_CALLER_ID = 13214
DIAL_TIME_LIMIT = 13216
GATHER_FINISH_ON_KEY = 13310
GATHER_METHOD = 13312
GATHER_TIMEOUT = 13313
GATHER_NUM_DIGITS = 13314
GATHER_NESTING = 13321
PLAY_LOOP = 13410
SAY_LOOP = 13510
SAY_VOICE = 13511  # also an invalid language
SAY_TEXT = 13520
RECORD_METHOD = 13610
RECORD_TIMEOUT = 13611
RECORD_MAX_LENGTH = 13612
RECORD_FINISH_ON_KEY = 13613
REDIRECT_METHOD = 13710
PAUSE_LENGTH = 13910


class DocumentError(RcmlError):
    """The body is not a usable RCML document (12100): malformed, hostile, empty, or not rooted at ``<Response>``."""

    def __init__(self, message: str, code: int = DOCUMENT_PARSE) -> None:
        super().__init__(message, code)


class SchemaError(RcmlError):
    """The document is well-formed XML but names an element RCML does not have (12200); it is refused whole."""

    def __init__(self, message: str, code: int = SCHEMA) -> None:
        super().__init__(message, code)


class ContentTypeError(RcmlError):
    """The response's Content-Type is neither XML, ``audio/*`` nor ``text/plain`` (12300)."""

    def __init__(self, message: str, code: int = BAD_CONTENT_TYPE) -> None:
        super().__init__(message, code)


class InterpreterStateError(RcmlError):
    """The interpreter tried a transition its table forbids: a bug in callplane, never caused by input."""
