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
from callplane.engine.trunks import ProxyPool, Trunks, parse_proxies
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

__all__ = ["CallEngine", "EngineConfig", "LiveCall", "Script", "ScriptFactory"]

log = logging.getLogger("callplane.engine")

BUSY = {486, 600, 603}
NO_ANSWER = {408, 480}


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
        now = self.clock.wall()
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
                direction="outbound-api",
                created=now,
                caller_name=user_part(request.from_),
            )
            call = LiveCall(
                facts,
                request,
                target,
                to_uri,
                status_callback=request.status_callback,
                status_callback_method=request.status_callback_method,
                events=frozenset(request.status_callback_events),
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
                    direction="outbound-api",
                    api_version=request.api_version,
                    caller_name=facts.caller_name,
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
        return records

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
                call.script.redirect(update.url, update.method, update.fallback_url, update.fallback_method)
            elif not call.state.final:
                # Not answered yet: the new document is the one fetched on answer.
                call.request = replace(
                    call.request,
                    url=update.url,
                    method=update.method,
                    fallback_url=update.fallback_url,
                    fallback_method=update.fallback_method,
                )
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
        if self.script_factory is not None:
            call.script = call.runner = self.script_factory(call)
            leg = self.leg_of(call)
            if leg is not None:
                call.leg = leg
                self._leg_owner[leg] = call
            call.script.start()

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
                duration = math.ceil((wall - call.answered_at).total_seconds())
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

    async def close(self) -> None:
        """Hang up every live call (the node is stopping) and write their final records."""
        pending = [self._hang_up(c, "cancel") for c in list(self._calls.values())]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
