"""The call engine: API calls become SIP calls, SIP events become call records and status callbacks.

Theory of operation
-------------------
:class:`CallEngine` implements :class:`~callplane.engine.control.CallControl`. ``place`` turns a validated
request into one :class:`LiveCall` per destination (``client:`` rings every registration), writes each record as
``queued`` and sends the INVITEs through :class:`~callplane.engine.media_session.MediaCalls`, which gives every
call an RTP leg. From then on the engine is driven by events (:meth:`CallEngine.on_event`, fed by MediaCalls):

* ``CallProgress`` 180/183 -> ``ringing``; ``CallAnswered`` -> ``in-progress`` and the RCML script starts;
* ``CallFailed`` -> ``busy`` (486/600/603), ``no-answer`` (our ring timeout, 408, 480), ``canceled`` (the API
  canceled it) or ``failed`` (anything else);
* ``CallEnded`` -> ``completed`` with ``duration = ceil(end - answer)``;
* digits and media events go to the call's script.

Every state change goes through :mod:`.callstate` (one table) and is persisted by the :class:`RecordWriter` as a
conditional update, together with the status callback it fires (queued in the outbox in the same transaction).
Nothing here blocks: store writes and webhook deliveries are tasks; SIP and media calls are synchronous sans-IO
steps behind MediaCalls.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from callplane.core.clock import Clock
from callplane.core.errors import EngineError
from callplane.core.ids import IdSource
from callplane.engine import media_session
from callplane.engine.callstate import CallState, IllegalTransition, is_live, step
from callplane.engine.control import (
    CallElsewhere,
    CallEnded,
    CallRequest,
    CallUpdate,
    NoRoute,
    UnknownCall,
    UnknownClient,
)
from callplane.engine.media_session import MediaCalls
from callplane.engine.params import CallFacts, status_params
from callplane.engine.writer import Callback, RecordWriter, Write
from callplane.media import events as media_events
from callplane.sip import events as sip
from callplane.sip.digest import Credentials
from callplane.sip.headers import URI
from callplane.store import calls as store_calls
from callplane.store import registrations
from callplane.store.calls import CallRecord
from callplane.store.db import Database, to_us
from callplane.store.outbox import CallbackTarget

__all__ = ["CallEngine", "CallObserver", "EngineConfig", "LiveCall", "Script", "ScriptFactory"]

log = logging.getLogger("callplane.engine")

BUSY = {486, 600, 603}
NO_ANSWER = {408, 480}


@dataclass(frozen=True, slots=True)
class EngineConfig:
    instance_id: str
    domain: str  # host part of the From URI we send: sip:{From}@{domain}
    outbound_proxy: str | None = None  # sip:host[:port][;transport=tcp], where numbers go
    outbound_username: str | None = None
    outbound_password: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    recordings_dir: Path = Path("var/recordings")
    api_version: str = "2012-04-24"
    registrar_instance: str | None = None  # the worker that holds the SIP port (with --workers); it calls client:


class Script(Protocol):
    """What runs a call's RCML once it is answered (see :mod:`.script`)."""

    def start(self) -> None: ...

    def redirect(self, url: str, method: str, fallback_url: str | None, fallback_method: str) -> None: ...

    def on_digit(self, digit: str) -> None: ...

    def on_media_event(self, event: object) -> None: ...

    def ended(self) -> None: ...


ScriptFactory = Callable[["LiveCall"], Script]


class CallObserver(Protocol):
    """What follows a call besides its script: the ``<Dial>`` that placed it, or that its parent is running
    (:mod:`.dial`). It sees the call's events after the engine has acted on them, and the call's end."""

    def on_call_event(self, call: LiveCall, event: object) -> None: ...

    def call_over(self, call: LiveCall) -> None: ...

    def redirected(self, call: LiveCall, update: CallUpdate) -> None: ...


@dataclass(eq=False)
class LiveCall:
    """One call this node is running (mutable; owned by the engine)."""

    facts: CallFacts
    request: CallRequest
    target: str
    to_uri: str
    state: CallState = CallState.QUEUED
    handle: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None  # an event we caused: "no_answer" (ring timeout) or "cancel" (API)
    timer: asyncio.TimerHandle | None = None
    script: Script | None = None  # while the call is live
    runner: Script | None = None  # until the script has finished (a last action may run after the hang-up)
    leg: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    events: frozenset[str] = field(default_factory=frozenset)
    observer: CallObserver | None = None  # a <Dial> this call is a leg of, or that it runs (see .dial)
    sip_status: int | None = None  # the final response to our INVITE (200 when answered)
    sip_headers: tuple[tuple[str, str], ...] = ()  # that response's X- headers
    unbilled_s: float = 0.0  # <Dial> ringing time, left out of the duration (calls-api "Call Duration")
    dial_ringing_since: datetime | None = None  # while a <Dial> of this call rings
    child_call_mode: str = "hangup"  # what a redirect does to its connected <Dial> leg: hangup, move, stay
    redirect_to: CallUpdate | None = None  # the live modification being applied (ChildCallMode=Move)

    @property
    def sid(self) -> str:
        return self.facts.sid

    @property
    def account_sid(self) -> str:
        return self.facts.account_sid


def user_part(value: str) -> str:
    """What the call record shows for a destination: the user of a SIP URI, the login of ``client:``, a number."""
    if value.startswith("client:"):
        return value[len("client:") :]
    if value.startswith(("sip:", "sips:")) or "@" in value:
        try:
            uri = URI.parse(value if value.startswith(("sip:", "sips:")) else "sip:" + value)
        except ValueError:
            return value
        return uri.user or uri.host
    return value


def split_headers(to: str) -> tuple[str, list[tuple[str, str]]]:
    """``client:alice?X-a=1&b=2`` -> (``client:alice``, [("X-a", "1"), ("X-b", "2")]) (restcomm-behaviour §2.2)."""
    dest, sep, query = to.partition("?")
    headers: list[tuple[str, str]] = []
    if sep:
        for part in filter(None, query.split("&")):
            name, _, value = part.partition("=")
            name = name.strip()
            if not name or any(c in name + value for c in "\r\n"):
                raise EngineError(f"To has an invalid custom header {part!r}", 400, 21210)
            headers.append((name if name[:2].upper() == "X-" else "X-" + name, value))
    return dest.strip(), headers


class CallEngine:
    """The node's call engine (CallControl for the API, event sink for MediaCalls)."""

    def __init__(
        self,
        db: Database,
        ids: IdSource,
        clock: Clock,
        media: MediaCalls,
        config: EngineConfig,
        *,
        writer: RecordWriter,
        script_factory: ScriptFactory | None = None,
    ) -> None:
        self.db = db
        self.ids = ids
        self.clock = clock
        self.media = media
        self.config = config
        self.writer = writer
        self.script_factory = script_factory
        self._calls: dict[str, LiveCall] = {}
        self._by_handle: dict[str, LiveCall] = {}
        self._leg_owner: dict[str, LiveCall] = {}  # legs whose media events go to a script, until it closes
        self.placed = 0

    # -- lookups --------------------------------------------------------------------------------------------
    def live(self, sid: str) -> LiveCall | None:
        return self._calls.get(sid)

    def __len__(self) -> int:
        return len(self._calls)

    def leg_of(self, call: LiveCall) -> str | None:
        mc = self.media.get(call.handle) if call.handle is not None else None
        return mc.leg_id if mc is not None else None

    # -- CallControl ----------------------------------------------------------------------------------------
    async def place(self, request: CallRequest) -> list[CallRecord]:
        dest, custom = split_headers(request.to)
        targets = await self._targets(dest, request.account_sid)
        records, _ = await self._start_calls(request, dest, custom, targets)
        return records

    async def _start_calls(
        self,
        request: CallRequest,
        dest: str,
        custom: list[tuple[str, str]],
        targets: list[tuple[str, str]],
        *,
        parent: LiveCall | None = None,
        observer: CallObserver | None = None,
    ) -> tuple[list[CallRecord], list[LiveCall]]:
        """One call per target: records written as ``queued`` (with their callback targets), then the INVITEs.
        With a ``parent`` they are ``outbound-dial`` legs of its ``<Dial>``, followed by ``observer``."""
        now = self.clock.wall()
        direction = "outbound-api" if parent is None else "outbound-dial"
        records: list[CallRecord] = []
        calls: list[LiveCall] = []
        for target, to_uri in targets:
            sid = self.ids.call_sid(self.config.instance_id)
            facts = CallFacts(
                sid=sid,
                instance_id=self.config.instance_id,
                account_sid=request.account_sid,
                from_=user_part(request.from_),
                to=user_part(dest),
                direction=direction,
                created=now,
                caller_name=user_part(request.from_),
                parent_call_sid=parent.sid if parent is not None else None,
            )
            call = LiveCall(
                facts,
                request,
                target,
                to_uri,
                status_callback=request.status_callback,
                status_callback_method=request.status_callback_method,
                events=frozenset(request.status_callback_events),
                observer=observer,
            )
            calls.append(call)
            records.append(
                CallRecord(
                    sid=sid,
                    instance_id=self.config.instance_id,
                    account_sid=request.account_sid,
                    date_created=now,
                    date_updated=now,
                    to=facts.to,
                    from_=facts.from_,
                    status="queued",
                    direction=direction,
                    api_version=request.api_version,
                    caller_name=facts.caller_name,
                    parent_call_sid=facts.parent_call_sid,
                )
            )
        cb_targets = [
            CallbackTarget(
                call.sid,
                call.account_sid,
                call.status_callback,
                call.status_callback_method,
                tuple(sorted(call.events)),
                request.api_version,
            )
            for call in calls
            if call.status_callback
        ]
        await self.writer.apply(Write(calls[0].sid, request.account_sid, inserts=records, targets=cb_targets))
        for call in calls:
            self._calls[call.sid] = call
            self._dial(call, custom)
        self.placed += len(calls)
        return records, calls

    async def modify(self, account_sid: str, call_sid: str, update: CallUpdate) -> CallRecord:
        call = self._calls.get(call_sid)
        if call is None or call.account_sid != account_sid:
            record = await store_calls.get(self.db, call_sid)
            if record is None or record.account_sid != account_sid:
                raise UnknownCall(call_sid)
            if not is_live(record.status):
                raise CallEnded(call_sid, record.status)
            raise CallElsewhere(
                f"Call {call_sid} is {record.status} on node {record.instance_id}, "
                f"not on this one ({self.config.instance_id})",
                record.instance_id,
            )
        if update.status_callback is not None:
            call.status_callback = update.status_callback
            call.status_callback_method = update.status_callback_method
            retarget = (update.status_callback, update.status_callback_method)
            await self.writer.apply(Write(call.sid, call.account_sid, retarget=retarget))
        if update.mute is not None and call.state is CallState.IN_PROGRESS:
            leg = self.leg_of(call)
            if leg is not None:
                self.media.media.mute(leg, update.mute)
        pending: asyncio.Future[bool] | None = None
        if update.status == "completed" or (
            update.status == "canceled" and call.state in (CallState.QUEUED, CallState.INITIATED, CallState.RINGING)
        ):
            pending = self._hang_up(call, "cancel")
        elif update.url is not None:
            if call.state is CallState.IN_PROGRESS and call.script is not None:
                # A <Dial> under way reads these when the redirect stops it (ChildCallMode).
                call.child_call_mode, call.redirect_to = update.child_call_mode, update
                call.script.redirect(update.url, update.method, update.fallback_url, update.fallback_method)
                call.child_call_mode, call.redirect_to = "hangup", None
            elif call.state is CallState.IN_PROGRESS and call.observer is not None:
                call.observer.redirected(call, update)  # a <Dial> leg: it leaves the bridge for its new RCML
            elif not call.state.final:
                # Not answered yet: the new document is the one fetched on answer.
                call.request = _with_document(call.request, update)
        if pending is not None:
            await pending
        await self.writer.flush()  # the answer shows every change made so far, ours and the call's own
        record = await store_calls.get(self.db, call_sid)
        if record is None:
            raise UnknownCall(call_sid)
        return record

    # -- placing --------------------------------------------------------------------------------------------
    async def _targets(self, dest: str, account_sid: str) -> list[tuple[str, str]]:
        """(Request-URI, To URI) per leg."""
        if dest.startswith("client:"):
            login = dest[len("client:") :]
            if not login or ":" in login:
                raise EngineError(f"{dest!r} is not a valid client identifier", 400, 21210)
            registrar = self.config.registrar_instance
            if registrar and registrar != self.config.instance_id:
                # Another worker holds the SIP port the clients registered on (and their TCP connections).
                raise CallElsewhere(f"Clients are called from worker {registrar}", registrar)
            rows = await registrations.lookup_login(
                self.db, login, self.clock.wall().timestamp(), account_sid=account_sid
            )
            if not rows:
                raise UnknownClient(login)
            return [(r.contact.strip("<>"), r.aor) for r in rows]
        if dest.startswith(("sip:", "sips:")) or "@" in dest:
            uri = dest if dest.startswith(("sip:", "sips:")) else "sip:" + dest
            try:
                URI.parse(uri)
            except ValueError:
                raise EngineError(f"To {dest!r} is not a valid SIP URI", 400, 21210) from None
            return [(uri, uri)]
        number = dest.replace(" ", "")
        if not number or not all(c.isdigit() or c in "+*#" for c in number):
            raise EngineError(f"To {dest!r} is neither a number, a client: nor a SIP URI", 400, 21210)
        if not self.config.outbound_proxy:
            raise NoRoute(
                f"Cannot call the number {dest}: no outbound proxy is configured (set CALLPLANE_OUTBOUND_PROXY)",
                400,
                21210,
            )
        proxy = URI.parse(self.config.outbound_proxy)
        port = f":{proxy.port}" if proxy.port else ""
        params = "".join(f";{k}={v}" if v is not None else f";{k}" for k, v in proxy.params)
        uri = f"sip:{number}@{proxy.host}{port}{params}"
        return [(uri, f"sip:{number}@{proxy.host}{port}")]

    def _from_uri(self, from_: str) -> str:
        if from_.startswith(("sip:", "sips:")):
            return from_
        if "@" in from_:
            return "sip:" + from_
        return f"sip:{from_}@{self.config.domain}"

    def _dial(self, call: LiveCall, custom: list[tuple[str, str]]) -> None:
        req = call.request
        headers = (
            *custom,
            *req.headers,
            ("X-RestComm-ApiVersion", req.api_version),
            ("X-RestComm-AccountSid", req.account_sid),
            ("X-RestComm-CallSid", call.sid),
        )
        credentials = None
        if req.username:
            credentials = Credentials(req.username, req.password or "")
        elif self.config.outbound_username and not call.target.startswith(("sip:client", "client:")):
            credentials = Credentials(self.config.outbound_username, self.config.outbound_password or "")
        try:
            mc = self.media.invite(
                call.target,
                self._from_uri(req.from_),
                to_uri=call.to_uri,
                headers=tuple(headers),
                credentials=credentials,
            )
        except Exception as e:
            log.warning("[%s] cannot place the call to %s: %s", call.sid, call.target, e)
            self._advance(call, "fail", end=True)
            return
        call.handle = mc.call
        self._by_handle[mc.call] = call
        loop = asyncio.get_running_loop()
        call.timer = loop.call_later(req.timeout, self._ring_timeout, call)
        self._advance(call, "dial")

    def _ring_timeout(self, call: LiveCall) -> None:
        call.timer = None
        if call.state in (CallState.INITIATED, CallState.RINGING):
            log.info("[%s] no answer within %d s: canceling", call.sid, call.request.timeout)
            self._hang_up(call, "no_answer")

    def hang_up(self, call: LiveCall) -> None:
        """The script ended the call (Hangup, Reject, the end of the document, a fatal error)."""
        if call.sid in self._calls:
            self._hang_up(call, "cancel")

    def script_closed(self, call: LiveCall) -> None:
        """The call's script has nothing more to do: its leg's events need not reach it any more."""
        call.runner = None
        if call.leg is not None:
            self._leg_owner.pop(call.leg, None)

    def _hang_up(self, call: LiveCall, reason: str) -> asyncio.Future[bool]:
        """End the call now, for ``reason`` (our own doing), and return when its final record is written."""
        answered = call.state is CallState.IN_PROGRESS
        if call.handle is not None:
            try:
                self.media.hangup(call.handle)
            except Exception:
                log.exception("[%s] hanging up failed", call.sid)
        return self._advance(call, "hangup" if answered else reason, end=True)

    # -- events ---------------------------------------------------------------------------------------------
    def on_event(self, event: object) -> None:
        """One event from MediaCalls (SIP call events, CallDigit, media events). Never raises."""
        try:
            self._on_event(event)
        except Exception:
            log.exception("engine: handling %r failed", event)

    def _on_event(self, event: object) -> None:
        handle = getattr(event, "call", None)
        if isinstance(handle, str):
            call = self._by_handle.get(handle)
            if call is None:
                return
            if isinstance(event, sip.CallFailed):
                call.sip_status, call.sip_headers = event.status, _x_headers(event.headers)
            elif isinstance(event, sip.CallAnswered):
                call.sip_status, call.sip_headers = 200, _x_headers(event.headers)
            if isinstance(event, sip.CallProgress):
                if event.status in (180, 183) and call.state is CallState.INITIATED:
                    self._advance(call, "ring")
            elif isinstance(event, sip.CallAnswered):
                self._answered(call)
            elif isinstance(event, sip.CallFailed):
                self._failed(call, event.status)
            elif isinstance(event, sip.CallEnded):
                if call.state is CallState.IN_PROGRESS:
                    self._advance(call, "hangup", end=True)
                else:
                    self._forget(call)
            elif isinstance(event, media_session.CallDigit):
                if call.script is not None:
                    call.script.on_digit(event.digit)
            if call.observer is not None:
                call.observer.on_call_event(call, event)
            return
        leg_id = getattr(event, "leg_id", None)
        if isinstance(leg_id, str):
            if isinstance(event, media_events.LegFailed):
                mc = self.media.by_leg(leg_id)
                failed = self._by_handle.get(mc.call) if mc is not None else None
                if failed is not None:
                    log.warning("[%s] its media failed (%s): hanging up", failed.sid, getattr(event, "reason", "?"))
                    self._hang_up(failed, "fail")
                return
            owner = self._leg_owner.get(leg_id)
            if owner is not None and owner.runner is not None:
                owner.runner.on_media_event(event)

    def _answered(self, call: LiveCall) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.state not in (CallState.INITIATED, CallState.RINGING):
            return
        self._advance(call, "answer")
        if self.script_factory is not None and call.facts.parent_call_sid is None:  # a <Dial> leg is its Dial's
            self.run_script(call, self.script_factory(call))

    def run_script(self, call: LiveCall, script: Script) -> None:
        """Give the answered ``call`` its ``script`` (its RCML, or a <Dial> callee's screening document), start it."""
        call.script = call.runner = script
        leg = self.leg_of(call)
        if leg is not None:
            call.leg = leg
            self._leg_owner[leg] = call
        script.start()

    def _failed(self, call: LiveCall, status: int) -> None:
        if call.state.final:
            self._forget(call)
            return
        if call.end_reason is not None:
            event = call.end_reason
        elif status in BUSY:
            event = "busy"
        elif status in NO_ANSWER:
            event = "no_answer"
        elif status == 487:
            event = "cancel"
        else:
            event = "fail"
        log.info("[%s] INVITE failed with %d: %s", call.sid, status, event)
        self._advance(call, event, end=True)

    # -- state changes --------------------------------------------------------------------------------------
    def _advance(self, call: LiveCall, event: str, *, end: bool = False) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            s = step(call.state, event)
        except IllegalTransition as e:
            log.debug("[%s] %s", call.sid, e)
            done.set_result(False)
            return done
        if event in ("no_answer", "cancel"):
            call.end_reason = event
        log.info("[%s] %s -> %s", call.sid, s.old.value, s.new.value)
        call.state = s.new
        wall = self.clock.wall()
        values: dict[str, Any] = {"status": s.new.record_status, "date_updated": to_us(wall)}
        duration: int | None = None
        if s.new is CallState.IN_PROGRESS:
            call.answered_at = wall
            values["start_time"] = to_us(wall)
            values["ring_duration"] = max(0, round((wall - call.facts.created).total_seconds()))
            values["answered_by"] = call.facts.to
        if s.new.final:
            call.ended_at = wall
            values["end_time"] = to_us(wall)
            if call.answered_at is not None:
                unbilled = call.unbilled_s
                if call.dial_ringing_since is not None:
                    unbilled += max(0.0, (wall - call.dial_ringing_since).total_seconds())
                duration = math.ceil(max(0.0, (wall - call.answered_at).total_seconds() - unbilled))
            else:
                duration = 0
                values["ring_duration"] = max(0, round((wall - call.facts.created).total_seconds()))
            values["duration"] = duration
        callbacks: list[Callback] = []
        if s.callback is not None and call.status_callback and s.callback in call.events:
            params = status_params(
                call.facts, s.callback, wall, duration=duration, api_version=call.request.api_version
            )
            callbacks.append(Callback(call.status_callback, call.status_callback_method, tuple(params)))
        write = Write(
            call.sid,
            call.account_sid,
            expect=s.expect,
            values=values,
            callbacks=callbacks,
            now=wall.timestamp(),
            final=s.new.final,
            done=done,
        )
        self.writer.submit(write)
        if s.new.final or end:
            self._forget(call)
        return done

    def _forget(self, call: LiveCall) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.script is not None:
            script, call.script = call.script, None
            try:
                script.ended()
            except Exception:
                log.exception("[%s] script cleanup failed", call.sid)
        if call.handle is not None:
            self._by_handle.pop(call.handle, None)
        self._calls.pop(call.sid, None)
        if call.observer is not None:
            observer, call.observer = call.observer, None
            try:
                observer.call_over(call)
            except Exception:
                log.exception("[%s] its <Dial> failed on the call's end", call.sid)

    # -- <Dial> legs (engine/dial.py runs the verb) ---------------------------------------------------------------
    async def place_dial_leg(self, parent: LiveCall, request: CallRequest, observer: CallObserver) -> list[LiveCall]:
        """Ring one noun of ``parent``'s ``<Dial>``: a child call per target, placed like an API call (``client:``
        rings every registration, numbers go through the outbound proxy), each an ``outbound-dial`` record with
        ``parent_call_sid``. Raises :class:`EngineError` when the noun cannot be called at all."""
        dest, custom = split_headers(request.to)
        targets = await self._targets(dest, request.account_sid)
        _, calls = await self._start_calls(request, dest, custom, targets, parent=parent, observer=observer)
        return calls

    def answer(self, call: LiveCall) -> bool:
        """Answer an inbound call that is still ringing; whether it is answered now.

        LEAD: minimal stand-in on the ``dial`` branch (every parent here is an API call, answered already); the
        ``inbound`` branch has the real method with this signature."""
        return call.state is CallState.IN_PROGRESS

    def move(self, call: LiveCall, update: CallUpdate) -> None:
        """Run ``update``'s Url on the answered ``call`` (a <Dial> leg that follows its parent: ChildCallMode=Move)."""
        assert update.url is not None
        call.request = _with_document(call.request, update)
        if call.script is not None:
            call.script.redirect(update.url, update.method, update.fallback_url, update.fallback_method)
        elif self.script_factory is not None and call.state is CallState.IN_PROGRESS:
            self.run_script(call, self.script_factory(call))

    async def close(self) -> None:
        """Hang up every live call (the node is stopping) and write their final records."""
        pending = [self._hang_up(c, "cancel") for c in list(self._calls.values())]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _x_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((n, v) for n, v in headers if n[:2].lower() == "x-")


def _with_document(request: CallRequest, update: CallUpdate) -> CallRequest:
    """``request`` whose RCML is ``update``'s Url (live call modification)."""
    assert update.url is not None
    return replace(
        request,
        url=update.url,
        method=update.method,
        fallback_url=update.fallback_url,
        fallback_method=update.fallback_method,
    )
