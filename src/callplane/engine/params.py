"""The parameters callplane sends to a developer's web server (restcomm-behaviour §4.1, §4.2; the seed's example).

* :func:`rcml_params`: every RCML request (the call's Url, Redirect, Gather/Record/Dial actions, fallbacks).
* :func:`status_params`: a call-progress status callback: the RCML parameters plus ``CallDuration`` (on
  ``completed`` only), ``Timestamp`` (RFC 2822, UTC), ``CallbackSource`` and ``SequenceNumber``.

Both keep repeated SIP headers as repeated parameters in header order (``SipHeader_Diversion`` twice when the INVITE
had two Diversion headers), as the seed's StatusCallback example shows. Missing values are the string ``null``,
as Restcomm sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from callplane.core.timefmt import iso8601, rfc2822

__all__ = ["EVENTS", "CallFacts", "rcml_params", "status_params"]

#: Status-callback events and their fixed SequenceNumber (restcomm-behaviour §4.1).
EVENTS = {"initiated": 0, "ringing": 1, "answered": 2, "completed": 3}

Params = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the parameters say about a call (a value the engine fills from its live call)."""

    sid: str
    instance_id: str
    account_sid: str
    from_: str
    to: str
    direction: str
    created: datetime
    caller_name: str | None = None
    forwarded_from: str | None = None
    parent_call_sid: str | None = None
    sip_headers: tuple[tuple[str, str], ...] = ()  # (name, value) in message order: X-…, Diversion, History-Info


def _null(value: str | None) -> str:
    return "null" if value in (None, "") else str(value)


def rcml_params(call: CallFacts, status: str, api_version: str = "2012-04-24") -> Params:
    """§4.2 in the seed's order: CallSid, InstanceId, AccountSid, From, To, CallStatus, ApiVersion, Direction,
    CallerName, ForwardedFrom, CallTimestamp, [ParentCallSid], then ``SipHeader_<name>`` per header."""
    params: Params = [
        ("CallSid", call.sid),
        ("InstanceId", call.instance_id),
        ("AccountSid", call.account_sid),
        ("From", call.from_),
        ("To", call.to),
        ("CallStatus", status),
        ("ApiVersion", api_version),
        ("Direction", call.direction),
        ("CallerName", _null(call.caller_name)),
        ("ForwardedFrom", _null(call.forwarded_from)),
        ("CallTimestamp", iso8601(call.created)),
    ]
    if call.parent_call_sid:
        params.append(("ParentCallSid", call.parent_call_sid))
    params.extend((f"SipHeader_{name}", value) for name, value in call.sip_headers)
    return params


def status_params(
    call: CallFacts, event: str, when: datetime, *, duration: int | None = None, api_version: str = "2012-04-24"
) -> Params:
    """A call-progress callback for ``event`` (one of :data:`EVENTS`); ``duration`` is sent on ``completed``."""
    params = rcml_params(call, event, api_version)
    if event == "completed":
        params.append(("CallDuration", str(duration or 0)))
    params += [
        ("Timestamp", rfc2822(when)),
        ("CallbackSource", "call-progress-events"),
        ("SequenceNumber", str(EVENTS[event])),
    ]
    return params
