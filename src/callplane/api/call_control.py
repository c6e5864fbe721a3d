"""The Calls resource (write side): place a call, and modify a live one (seed; restcomm-behaviour §2, §3).

Parameters are validated here and every bad value is a 400 naming the parameter; the engine's
:class:`~callplane.engine.control.CallControl` does the rest. Success answers 200 with the call as the seed shows it
(one record, or a list when ``client:`` rang several registrations).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.core.errors import ApiError, EngineError
from callplane.engine.control import CALLBACK_EVENTS, CallControl, CallElsewhere, CallRequest, CallUpdate
from callplane.store.calls import CallRecord

from .auth import Authenticator
from .calls import call_json, call_xml
from .errors import bad_request, wants_json
from .formats import dumps, xml_document
from .forms import form_fields
from .forward import Forwarder
from .params import method_param as _method
from .params import url_param as _url

__all__ = ["build_router", "parse_call_request", "parse_call_update"]

MAX_TIMEOUT = 600
_HEADER_NAME = re.compile(r"X-[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def _events(fields: dict[str, str]) -> tuple[str, ...]:
    raw = fields.get("StatusCallbackEvent", "").strip()
    if not raw:
        return ("completed",)
    events = [e for e in re.split(r"[,\s]+", raw) if e]
    unknown = [e for e in events if e.lower() not in CALLBACK_EVENTS]
    if unknown:
        raise bad_request(
            f"StatusCallbackEvent has unknown event(s) {', '.join(unknown)}; use {', '.join(CALLBACK_EVENTS)}"
        )
    wanted = {e.lower() for e in events}
    return tuple(e for e in CALLBACK_EVENTS if e in wanted)


def _timeout(fields: dict[str, str]) -> int:
    raw = fields.get("Timeout", "").strip()
    if not raw:
        return 60
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TIMEOUT:
        raise bad_request(f"Timeout must be a whole number of seconds from 1 to {MAX_TIMEOUT}, got {raw!r}")
    return int(raw)


def parse_call_request(account_sid: str, fields: dict[str, str]) -> CallRequest:
    for name in ("From", "To"):
        if not fields.get(name, "").strip():
            raise bad_request(f"{name} is required")
    url = _url(fields, "Url", required=True)
    assert url is not None
    headers = []
    for name, value in fields.items():
        if name[:2].upper() == "X-":
            if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n"):
                raise bad_request(f"{name!r} is not a valid custom SIP header")
            headers.append((name, value))
    return CallRequest(
        account_sid=account_sid,
        from_=fields["From"].strip(),
        to=fields["To"].strip(),
        url=url,
        method=_method(fields, "Method"),
        fallback_url=_url(fields, "FallbackUrl"),
        fallback_method=_method(fields, "FallbackMethod"),
        status_callback=_url(fields, "StatusCallback"),
        status_callback_method=_method(fields, "StatusCallbackMethod"),
        status_callback_events=_events(fields),
        timeout=_timeout(fields),
        username=fields.get("Username") or None,
        password=fields.get("Password") or None,
        headers=tuple(headers),
    )


def parse_call_update(fields: dict[str, str]) -> CallUpdate:
    status = fields.get("Status", "").strip().lower() or None
    if status is not None and status not in ("canceled", "completed"):
        raise bad_request(f"Status must be canceled or completed, got {fields['Status']!r}")
    mute: bool | None = None
    if "Mute" in fields:
        raw = fields["Mute"].strip().lower()
        if raw not in ("true", "false"):
            raise bad_request(f"Mute must be true or false, got {fields['Mute']!r}")
        mute = raw == "true"
    update = CallUpdate(
        child_call_mode=_child_call_mode(fields),
        url=_url(fields, "Url"),
        method=_method(fields, "Method"),
        fallback_url=_url(fields, "FallbackUrl"),
        fallback_method=_method(fields, "FallbackMethod"),
        status_callback=_url(fields, "StatusCallback"),
        status_callback_method=_method(fields, "StatusCallbackMethod"),
        status=status,
        mute=mute,
    )
    if update.url is None and update.status is None and update.mute is None:
        raise bad_request("Give at least one of Url, Status or Mute")
    return update


_CHILD_CALL_MODES = {"hangup": "hangup", "move": "move", "stayconnected": "stay"}


def _child_call_mode(fields: dict[str, str]) -> str:
    """``ChildCallMode`` (Hangup, Move, StayConnected; any case), or Restcomm's ``MoveConnectedCallLeg=true``,
    the deprecated form of Move. The default is Hangup."""
    raw = fields.get("ChildCallMode", "").strip()
    if raw:
        mode = _CHILD_CALL_MODES.get(raw.lower())
        if mode is None:
            raise bad_request(f"ChildCallMode must be Hangup, Move or StayConnected, got {raw!r}")
        return mode
    move = fields.get("MoveConnectedCallLeg", "").strip().lower()
    if move not in ("", "true", "false"):
        raise bad_request(f"MoveConnectedCallLeg must be true or false, got {fields['MoveConnectedCallLeg']!r}")
    return "move" if move == "true" else "hangup"


def _engine_error(e: EngineError) -> ApiError:
    return ApiError(e.status, str(e), e.code)


def _render(request: Request, records: list[CallRecord]) -> Response:
    if wants_json(request):
        body = call_json(records[0]) if len(records) == 1 else [call_json(r) for r in records]
        return Response(dumps(body), media_type="application/json")
    inner = "".join(call_xml(r) for r in records)
    if len(records) > 1:
        inner = f"<Calls>{inner}</Calls>"
    return Response(xml_document(inner), media_type="application/xml")


def build_router(auth: Authenticator, control: CallControl | None, forwarder: Forwarder | None = None) -> APIRouter:
    router = APIRouter(tags=["Calls"])

    async def elsewhere(request: Request, e: CallElsewhere, fields: dict[str, str]) -> Response:
        """The owner's answer; the refusal when there is no owner to ask (or this was already forwarded)."""
        if forwarder is not None and forwarder.may_forward(request, e.instance_id):
            answer = await forwarder.forward(request, e.instance_id, fields)
            if answer is not None:
                return answer
        raise _engine_error(e) from None

    def engine() -> CallControl:
        if control is None:
            raise ApiError(503, "The call engine is not running on this node", 20503)
        return control

    @router.post(
        "/Accounts/{AccountSid}/Calls",
        summary="Place a call",
        description="Dial `To` from `From`; when the callee answers, fetch RCML from `Url` and run it.",
    )
    async def place_call(request: Request, AccountSid: str) -> Response:  # noqa: N803 (Restcomm's path name)
        _, account = await auth.authorize(request, AccountSid)
        fields = await form_fields(request)
        call = parse_call_request(account.sid, fields)
        try:
            records = await engine().place(call)
        except CallElsewhere as e:
            return await elsewhere(request, e, fields)
        except EngineError as e:
            raise _engine_error(e) from None
        return _render(request, records)

    @router.post(
        "/Accounts/{AccountSid}/Calls/{CallSid}",
        summary="Modify a live call",
        description="Redirect the call to new RCML (`Url`), hang it up (`Status`), or mute it (`Mute`).",
    )
    async def modify_call(request: Request, AccountSid: str, CallSid: str) -> Response:  # noqa: N803
        _, account = await auth.authorize(request, AccountSid)
        fields = await form_fields(request)
        update = parse_call_update(fields)
        try:
            record = await engine().modify(account.sid, CallSid, update)
        except CallElsewhere as e:
            return await elsewhere(request, e, fields)
        except EngineError as e:
            raise _engine_error(e) from None
        return _render(request, [record])

    return router
