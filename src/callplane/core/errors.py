"""The project's error tree. Each layer has one root; each layer catches its own errors at one boundary.

::

    CallplaneError
    ├── ConfigError            bad settings or command-line values
    ├── SipError               callplane.sip (carries a SIP status code where one applies)
    ├── MediaError             callplane.media
    ├── RcmlError              callplane.rcml (carries a Restcomm error code)
    │   ├── DocumentError      12100: malformed, hostile, empty, or root not <Response>
    │   ├── SchemaError        12200: an element RCML does not have
    │   ├── ContentTypeError   12300: a fetch returned neither XML, audio/* nor text/plain
    │   └── InterpreterStateError  a forbidden interpreter transition (a bug, never input)
    ├── WebhookError           callplane.webhooks
    ├── EngineError            callplane.engine (carries the HTTP status the API answers with)
    ├── StoreError             callplane.store
    │   ├── NotFound
    │   └── Conflict
    └── ApiError               callplane.api (carries the HTTP status and a Restcomm error code)
"""

from __future__ import annotations


class CallplaneError(Exception):
    """Root of every error callplane raises on purpose."""


class ConfigError(CallplaneError):
    """A setting or command-line value is invalid."""


class SipError(CallplaneError):
    """Root of the SIP layer. ``status`` is the SIP response code the error maps to, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MediaError(CallplaneError):
    """Root of the media layer."""


class RcmlError(CallplaneError):
    """Root of the RCML layer. ``code`` is the Restcomm error code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class WebhookError(CallplaneError):
    """Root of the webhook layer."""


class EngineError(CallplaneError):
    """Root of the call engine's refusals (an unknown client, no route, a call that has ended...).

    ``status`` is the HTTP status the API maps the refusal to; ``code`` a Twilio/Restcomm error code."""

    def __init__(self, message: str, status: int = 400, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StoreError(CallplaneError):
    """Root of the store layer; driver errors are translated into this tree."""


class NotFound(StoreError):
    """The requested row does not exist."""


class Conflict(StoreError):
    """A uniqueness or concurrency rule was violated."""


class ApiError(CallplaneError):
    """An error the HTTP API reports to its client."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else status
