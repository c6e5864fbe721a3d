"""The call engine: API calls become SIP calls, SIP events become call records and status callbacks.

Theory of operation
-------------------
:class:`CallEngine` implements :class:`~callplane.engine.control.CallControl`. ``place`` turns a validated
request into one :class:`LiveCall` per destination (``client:`` rings every registration), writes each record as
``queued`` and sends the INVITEs through :class:`~callplane.engine.media_session.MediaCalls`, which gives every
call an RTP leg. From then on the engine is driven by events (:meth:`CallEngine.on_event`, fed by MediaCalls):

* ``CallProgress`` 180/183 -> ``ringing``; ``CallAnswered`` -> ``in-progress`` and the RCML script starts;
* ``CallFailed`` -> ``busy`` (486/600/603), ``no-answer`` (our ring timeout, 408, 480), ``canceled`` (the API
  canceled it) or ``failed`` (anything else); but a call to a number whose proxy answered 503 or timed out is first
  re-sent to the next proxy (:mod:`.trunks`, :meth:`CallEngine._fail_over`);
* ``CallEnded`` -> ``completed`` with ``duration = ceil(end - answer)``;
* digits and media events go to the call's script.

Inbound calls (issue 9) take the other way in: :meth:`CallEngine.on_incoming` (subscribed to the dispatcher's
``IncomingCall`` at ``APP`` order) claims every INVITE and routes it in a task with :mod:`.inbound` (store lookups,
digest). A refused INVITE gets its final response there; a routed one becomes an ``inbound`` LiveCall that starts
``ringing`` (180 sent, record written, ``ringing`` callback), and its RCML script starts at once, unanswered. The
script answers it (:meth:`CallEngine.answer`), rejects it (:meth:`CallEngine.refuse`), or the caller gives up
(``CallCancelled`` -> ``canceled``). The number's StatusCallback gets the RCML parameters (§4.2) with the call's
status at each change, and ``CallDuration`` on the last one.

Every state change goes through :mod:`.callstate` (one table) and is persisted by the :class:`RecordWriter` as a
conditional update, together with the status callback it fires (queued in the outbox in the same transaction).
Nothing here blocks: store writes and webhook deliveries are tasks; SIP and media calls are synchronous sans-IO
steps behind MediaCalls.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from callplane.engine import inbound as routing
from callplane.engine import media_session
from callplane.engine.callstate import CallState, IllegalTransition, Step, is_live, step
from callplane.engine.control import (
    CALLBACK_EVENTS,
    CallElsewhere,
    CallEnded,
    CallRequest,
    CallUpdate,
    NoRoute,
    UnknownCall,
    UnknownClient,
)
from callplane.engine.dispatch import APP, SipEventDispatcher, Subscription
from callplane.engine.media_session import MediaCall, MediaCalls
from callplane.engine.params import CallFacts, rcml_params, status_params
from callplane.engine.trunks import ProxyPool, Trunks, parse_proxies
from callplane.engine.writer import Callback, RecordWriter, Write
from callplane.media import events as media_events
from callplane.sip import events as sip
from callplane.sip.aio import RateLimitedLog
from callplane.sip.digest import Credentials
from callplane.sip.headers import URI
from callplane.sip.ua import CallStateError
from callplane.store import calls as store_calls
from callplane.store import registrations
from callplane.store.calls import CallRecord
from callplane.store.db import Database, to_us
from callplane.store.outbox import CallbackTarget

__all__ = ["CallEngine", "CallObserver", "EngineConfig", "LiveCall", "Script", "ScriptFactory"]

log = logging.getLogger("callplane.engine")

BUSY = {486, 600, 603}
NO_ANSWER = {408, 480}
MAX_ROUTING = 256
"""INVITEs being routed at once (store lookups); beyond this an INVITE is answered 503 with Retry-After."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    instance_id: str
    domain: str  # host part of the From URI we send: sip:{From}@{domain}
    outbound_proxy: str | None = None  # sip:host[:port][;transport=tcp][, ...]: where numbers go (engine.trunks)
    outbound_proxy_failures: int = 3  # failures in a row that skip a proxy...
    outbound_proxy_retry: float = 30.0  # ...for this many seconds
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
    custom_headers: tuple[tuple[str, str], ...] = ()  # from To's ?query, kept for a fail-over's new INVITE
    incoming: sip.IncomingCall | None = None  # an inbound call: the INVITE it answers
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
    if value.lower().startswith("tel:"):
        return value[len("tel:") :].partition(";")[0]
    if value.startswith(("sip:", "sips:")) or "@" in value:
        try:
            uri = URI.parse(value if value.startswith(("sip:", "sips:")) else "sip:" + value)
        except ValueError:
            return value
        return uri.user or uri.host
    return value


def first_record(facts: CallFacts, status: str, api_version: str, *, phone_number_sid: str | None = None) -> CallRecord:
    """A new call's record: what its facts say, in ``status``."""
    return CallRecord(
        sid=facts.sid,
        instance_id=facts.instance_id,
        account_sid=facts.account_sid,
        date_created=facts.created,
        date_updated=facts.created,
        to=facts.to,
        from_=facts.from_,
        status=status,
        direction=facts.direction,
        parent_call_sid=facts.parent_call_sid,
        phone_number_sid=phone_number_sid,
        api_version=api_version,
        forwarded_from=facts.forwarded_from,
        caller_name=facts.caller_name,
    )


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
        self.trunks = Trunks(
            ProxyPool(
                parse_proxies(config.outbound_proxy),
                failures=config.outbound_proxy_failures,
                retry=config.outbound_proxy_retry,
            )
        )
        self.inbound: routing.InboundRouter | None = None  # None: INVITEs are not claimed (the 404 fallback)
        self.received = 0
        self._routing: set[asyncio.Task[None]] = set()
        self._routing_failures = RateLimitedLog(10.0, log, "inbound")

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
        self._from_uri(request.from_)  # a From that makes no URI is refused before anything is written
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
            records.append(first_record(facts, "queued", request.api_version))
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
            if call.script is not None:  # answered, or an inbound call whose script runs while it rings
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
    async def _targets(self, dest: str, account_sid: str, *, here: bool = False) -> list[tuple[str, str]]:
        """(Request-URI, To URI) per leg. ``here``: a ``client:`` is called from this worker even when another one
        holds the registrations (a ``<Dial>`` leg must be placed by the worker that runs its caller)."""
        if dest.startswith("client:"):
            login = dest[len("client:") :]
            if not login or ":" in login:
                raise EngineError(f"{dest!r} is not a valid client identifier", 400, 21210)
            registrar = self.config.registrar_instance
            if registrar and registrar != self.config.instance_id and not here:
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
        target = self.trunks.target(number, self.clock.monotonic())
        if target is None:
            raise NoRoute(
                f"Cannot call the number {dest}: no outbound proxy is configured (set CALLPLANE_OUTBOUND_PROXY)",
                400,
                21210,
            )
        return [target]

    def _from_uri(self, from_: str) -> str:
        """Our INVITE's From URI: ``From`` itself when it is a ``sip:``/``sips:``/``tel:`` URI, ``sip:`` + From when it
        has an ``@``, else ``sip:{From}@{our domain}`` (a number without its spaces; ``client:alice`` as ``alice``).
        Raises EngineError (400, 21212) when that makes no valid URI."""
        value = from_.strip()
        if value.lower().startswith(("sip:", "sips:", "tel:")):
            uri = value
        elif "@" in value:
            uri = "sip:" + value
        else:
            user = value.removeprefix("client:")
            number = user.replace(" ", "")
            if number and all(c.isdigit() or c in "+*#" for c in number):
                user = number
            uri = f"sip:{user}@{self.config.domain}" if user and ":" not in user else ""
        try:
            URI.parse(uri)
        except ValueError:
            raise EngineError(f"From {from_!r} is neither a number, a client name nor a SIP URI", 400, 21212) from None
        return uri

    def _dial(self, call: LiveCall, custom: list[tuple[str, str]]) -> None:
        call.custom_headers = tuple(custom)
        if not self._invite(call):
            self._advance(call, "fail", end=True)
            return
        loop = asyncio.get_running_loop()
        call.timer = loop.call_later(call.request.timeout, self._ring_timeout, call)
        self._advance(call, "dial")

    def _invite(self, call: LiveCall) -> bool:
        """Send the call's INVITE to ``call.target``; False when it could not be sent."""
        req = call.request
        headers = (
            *call.custom_headers,
            *req.headers,
            ("X-RestComm-ApiVersion", req.api_version),
            ("X-RestComm-AccountSid", req.account_sid),
            ("X-RestComm-CallSid", call.sid),
        )
        credentials = None
        if req.username:
            credentials = Credentials(req.username, req.password or "")
        elif self.config.outbound_username and self.trunks.proxy_of(call.target) is not None:
            # The trunk's credentials answer the trunk's challenges only (never a Client's or another URI's).
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
            return False
        if self.media.get(mc.call) is None:
            # It failed inside the send (a host whose failed lookup is cached), before its handle was known here.
            log.warning("[%s] cannot reach %s", call.sid, call.target)
            return self._next_proxy(call, 503) and self._invite(call)
        call.handle = mc.call
        self._by_handle[mc.call] = call
        return True

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
            if isinstance(event, sip.CallProgress):
                if event.status in (180, 183) and call.state is CallState.INITIATED:
                    self._advance(call, "ring")
            elif isinstance(event, sip.CallAnswered):
                call.sip_status, call.sip_headers = 200, _x_headers(event.headers)
                self._answered(call)
            elif isinstance(event, sip.CallFailed):
                call.sip_status, call.sip_headers = event.status, _x_headers(event.headers)
                self._failed(call, event.status)
            elif isinstance(event, sip.CallCancelled):
                self._advance(call, "cancel", end=True)  # the caller gave up before the answer
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
        self.trunks.ended(call.target, 200, self.clock.monotonic())
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
        if self._fail_over(call, status):
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

    def _fail_over(self, call: LiveCall, status: int) -> bool:
        """A trunk call whose proxy answered 503 or timed out goes to the next proxy (:mod:`.trunks`): same call
        and CallSid, a new INVITE; its ring timeout keeps running. True when it was re-sent."""
        if not self._next_proxy(call, status):
            return False
        if call.handle is not None:
            self._by_handle.pop(call.handle, None)
        call.handle = None
        return self._invite(call)

    def _next_proxy(self, call: LiveCall, status: int) -> bool:
        """Count the INVITE's outcome against its proxy; on a proxy failure, aim the call at the next proxy."""
        now = self.clock.monotonic()
        if not self.trunks.ended(call.target, status, now) or call.end_reason is not None:
            return False
        following = self.trunks.next_target(call.target, now)
        if following is None:
            return False
        log.info("[%s] %s failed with %d: trying %s", call.sid, call.target, status, following[0])
        call.target, call.to_uri = following
        return True

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
            params = self._callback_params(call, s, wall, duration)
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
        # From this worker's own SIP port: the bridge needs both legs here. A Client registered over TCP with worker 0
        # gets a connection of its own from this one.
        targets = await self._targets(dest, request.account_sid, here=True)
        _, calls = await self._start_calls(request, dest, custom, targets, parent=parent, observer=observer)
        return calls

    def move(self, call: LiveCall, update: CallUpdate) -> None:
        """Run ``update``'s Url on the answered ``call`` (a <Dial> leg that follows its parent: ChildCallMode=Move)."""
        assert update.url is not None
        call.request = _with_document(call.request, update)
        if call.script is not None:
            call.script.redirect(update.url, update.method, update.fallback_url, update.fallback_method)
        elif self.script_factory is not None and call.state is CallState.IN_PROGRESS:
            self.run_script(call, self.script_factory(call))

    def _callback_params(self, call: LiveCall, s: Step, wall: datetime, duration: int | None) -> list[tuple[str, str]]:
        if call.incoming is not None:
            # A number's StatusCallback (restcomm-behaviour §4.2, last paragraph): the RCML parameters with the
            # call's status, as the seed's example shows; CallDuration on the last one.
            params = rcml_params(call.facts, s.new.record_status, call.request.api_version)
            if s.new.final:
                params.append(("CallDuration", str(duration or 0)))
            return params
        assert s.callback is not None
        return status_params(call.facts, s.callback, wall, duration=duration, api_version=call.request.api_version)

    async def close(self) -> None:
        """Hang up every live call (the node is stopping) and write their final records."""
        for task in list(self._routing):
            task.cancel()
        await asyncio.gather(*self._routing, return_exceptions=True)
        pending = [self._hang_up(c, "cancel") for c in list(self._calls.values())]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- inbound calls (issue 9) ----------------------------------------------------------------------------
    def attach(self, dispatcher: SipEventDispatcher) -> Subscription:
        """Take new INVITEs from the node's dispatcher at ``APP`` order (after MediaCalls, before the 404 fallback)."""
        return dispatcher.subscribe(self.on_incoming, types=(sip.IncomingCall,), order=APP, name="call-engine")

    def on_incoming(self, event: sip.IncomingCall) -> bool:
        """Claim a new INVITE and route it in a task (:mod:`.inbound`); False (unclaimed: 404) without a router."""
        if self.inbound is None:
            return False
        ua = self.media.ua
        now = asyncio.get_running_loop().time()
        if len(self._routing) >= MAX_ROUTING:
            ua.reject(event.call, 503, now, headers=(("Retry-After", "5"),))
            self.media.endpoint.flush()
            return True
        invite = ua.call(event.call).invite
        credentials = tuple(invite.headers.get_all("proxy-authorization"))
        task = asyncio.get_running_loop().create_task(self._take_incoming(event, credentials, invite.body))
        self._routing.add(task)
        task.add_done_callback(self._routing.discard)
        return True

    async def _take_incoming(self, event: sip.IncomingCall, credentials: tuple[str, ...], body: bytes) -> None:
        assert self.inbound is not None
        try:
            decision = await self.inbound.route(event, credentials, body, self.clock.wall().timestamp())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one line, rate-limited: a peer must not be able to flood the log
            what = f"{event.from_uri} -> {event.request_uri}: {exc!r}"
            self._routing_failures.warn("INVITE routing failed", asyncio.get_running_loop().time(), what)
            decision = routing.Refusal(500, "Routing Failure")
        try:
            if self.media.ua.call(event.call).state != "received":
                return
        except CallStateError:  # the caller gave up while we looked
            return
        if isinstance(decision, routing.Refusal):
            self.media.ua.reject(
                event.call,
                decision.status,
                asyncio.get_running_loop().time(),
                decision.reason,
                headers=decision.headers,
            )
            self.media.endpoint.flush()
            return
        try:
            self._start_inbound(event, decision)
        except Exception:
            log.exception("starting the inbound call %s failed", event.call)
            with contextlib.suppress(Exception):
                self.media.hangup(event.call, 500)

    def _start_inbound(self, event: sip.IncomingCall, route: routing.Route) -> None:
        """The call rings (180), its record and ``ringing`` callback are written, and its script starts."""
        wall = self.clock.wall()
        sid = self.ids.call_sid(self.config.instance_id)
        facts = CallFacts(
            sid=sid,
            instance_id=self.config.instance_id,
            account_sid=route.account_sid,
            from_=routing.uri_user(event.from_uri),
            to=routing.uri_user(event.request_uri),
            direction="inbound",
            created=wall,
            caller_name=event.from_display or None,
            forwarded_from=routing.forwarded_from(event.headers),
            sip_headers=routing.sip_header_params(event.headers),
        )
        request = CallRequest(
            account_sid=route.account_sid,
            from_=facts.from_,
            to=facts.to,
            url=route.url,
            method=route.method,
            fallback_url=route.fallback_url,
            fallback_method=route.fallback_method,
            status_callback=route.status_callback,
            status_callback_method=route.status_callback_method,
            status_callback_events=CALLBACK_EVENTS,
            api_version=route.api_version,
        )
        call = LiveCall(
            facts,
            request,
            event.request_uri,
            event.to_uri,
            state=CallState.RINGING,
            handle=event.call,
            status_callback=route.status_callback,
            status_callback_method=route.status_callback_method,
            events=frozenset(CALLBACK_EVENTS),
            incoming=event,
        )
        record = first_record(facts, "ringing", route.api_version, phone_number_sid=route.phone_number_sid)
        targets: list[CallbackTarget] = []
        callbacks: list[Callback] = []
        if route.status_callback:
            targets.append(
                CallbackTarget(
                    sid,
                    route.account_sid,
                    route.status_callback,
                    route.status_callback_method,
                    CALLBACK_EVENTS,
                    route.api_version,
                )
            )
            params = rcml_params(facts, "ringing", route.api_version)
            callbacks.append(Callback(route.status_callback, route.status_callback_method, tuple(params)))
        self.media.ua.ring(event.call, asyncio.get_running_loop().time())
        self.media.endpoint.flush()
        self._calls[sid] = call
        self._by_handle[event.call] = call
        self.received += 1
        log.info("[%s] inbound %s -> %s (%s): ringing", sid, event.from_uri, event.request_uri, route.kind)
        self.writer.submit(
            Write(sid, route.account_sid, inserts=[record], targets=targets, callbacks=callbacks, now=wall.timestamp())
        )
        if self.script_factory is None:
            self.refuse(call, 480, "fail")
            return
        call.script = call.runner = self.script_factory(call)
        call.script.start()

    def answer(self, call: LiveCall) -> bool:
        """Answer a ringing inbound call: 200 with our SDP (MediaCalls), then ``in-progress``. True when the call is
        answered (already or now); False when it is not an inbound call that rings, or the answer failed (the
        offer had nothing we can carry: 488; no RTP port: 503), which ends the call ``failed``."""
        if call.state is CallState.IN_PROGRESS:
            return True
        if self._inbound_leg(call, self.media.answer, "answer") is None:
            return False
        self._advance(call, "answer")
        return True

    def early_media(self, call: LiveCall) -> bool:
        """Give a ringing inbound call early media (183 with our answer, and its leg) so a ``<Dial>`` can bridge the
        callee's ringback or announcement to it before anyone answers. True when the call has a leg now (already
        answered, or early media set up); False otherwise (not an inbound call that rings, or an INVITE without an
        offer, or the offer was refused, which ends the call ``failed``)."""
        if call.state is CallState.IN_PROGRESS:
            return True
        return self._inbound_leg(call, self.media.progress, "start early media") is not None

    def _inbound_leg(
        self, call: LiveCall, make: Callable[[sip.IncomingCall], MediaCall | None], what: str
    ) -> MediaCall | None:
        """The leg ``make`` gives the ringing inbound ``call`` (answering it, or with early media), owned by its
        script; None when the call is not one, or ``make`` gave none; a failure ends the call ``failed``."""
        if call.incoming is None or call.state is not CallState.RINGING or call.sid not in self._calls:
            return None
        try:
            mc = make(call.incoming)
        except Exception as e:
            log.warning("[%s] cannot %s: %s", call.sid, what, e)
            with contextlib.suppress(Exception):
                self.media.hangup(call.incoming.call, 500)  # no-op when MediaCalls already refused it (488/503)
            self._advance(call, "fail", end=True)
            return None
        if mc is not None and call.runner is not None:
            call.leg = mc.leg_id
            self._leg_owner[mc.leg_id] = call
        return mc

    def refuse(self, call: LiveCall, sip_status: int, event: str) -> None:
        """End a ringing inbound call without answering it: ``sip_status`` to the INVITE, ``event`` (``busy``,
        ``no_answer``, ``fail``, ``cancel``) for its record. Once answered, this is a hang-up."""
        if call.sid not in self._calls:
            return
        if call.state is not CallState.RINGING or call.incoming is None:
            self._hang_up(call, "cancel")
            return
        try:
            self.media.hangup(call.incoming.call, sip_status)
        except Exception:
            log.exception("[%s] refusing the call failed", call.sid)
        self._advance(call, event, end=True)


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
