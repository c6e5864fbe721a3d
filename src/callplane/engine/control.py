"""``CallControl``: the one interface the API uses to act on calls (issue 8; style.md layer rules).

The API never holds a live call. It parses and validates a request into a :class:`CallRequest` or
:class:`CallUpdate` and asks a ``CallControl`` to act; the engine answers with call records as the store has them.
Refusals are :class:`~callplane.core.errors.EngineError` values carrying the HTTP status the API answers with.

This module imports nothing but core and store, so the API can depend on it without reaching sip, media, rcml or
webhooks (the import contract in pyproject.toml checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from callplane.core.errors import EngineError
from callplane.store.calls import CallRecord

__all__ = [
    "CALLBACK_EVENTS",
    "CallControl",
    "CallElsewhere",
    "CallEnded",
    "CallRequest",
    "CallUpdate",
    "NoRoute",
    "UnknownCall",
    "UnknownClient",
]

CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True, slots=True)
class CallRequest:
    """``POST /Accounts/{AccountSid}/Calls``, validated (seed parameters and restcomm-behaviour §2.1)."""

    account_sid: str
    from_: str
    to: str  # as given: sip:…, client:…, or a number; may carry ?X-h=v custom headers
    url: str
    method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: tuple[str, ...] = ("completed",)
    timeout: int = 60
    username: str | None = None
    password: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # X-… form parameters, in request order
    api_version: str = "2012-04-24"


@dataclass(frozen=True, slots=True)
class CallUpdate:
    """``POST /Accounts/{AccountSid}/Calls/{CallSid}`` (live call modification, §3). ``None`` means absent."""

    url: str | None = None
    method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status: str | None = None  # "canceled" or "completed"
    mute: bool | None = None
    child_call_mode: str = "hangup"  # the connected <Dial> leg on a redirect: "hangup", "move" or "stay"


class UnknownClient(EngineError):
    """``client:login`` has no current registration (404, naming the login)."""

    def __init__(self, login: str) -> None:
        super().__init__(f"The client {login!r} is not registered", status=404, code=20404)
        self.login = login


class NoRoute(EngineError):
    """The destination cannot be reached from this node (400, naming what is missing)."""


class UnknownCall(EngineError):
    def __init__(self, sid: str) -> None:
        super().__init__(f"Call {sid} was not found", status=404, code=20404)


class CallEnded(EngineError):
    """The call has already ended: nothing to modify (409)."""

    def __init__(self, sid: str, status: str) -> None:
        super().__init__(f"Call {sid} has already ended (status {status}); it can no longer be modified", 409, 21220)


class CallElsewhere(EngineError):
    """The request belongs to another worker or node: the live call runs there, or (``client:``) that worker holds
    the registrations. The API forwards the request to ``instance_id`` (``core.nodes``); when that fails, or the
    request was already forwarded once, this is the answer (409)."""

    def __init__(self, message: str, instance_id: str) -> None:
        super().__init__(message, 409, 21220)
        self.instance_id = instance_id


class CallControl(Protocol):
    async def place(self, request: CallRequest) -> list[CallRecord]:
        """Create the call record(s) (status ``queued``) and start dialling; one record per leg."""
        ...

    async def modify(self, account_sid: str, call_sid: str, update: CallUpdate) -> CallRecord:
        """Redirect, hang up or mute a live call; the record as it is after the change."""
        ...
