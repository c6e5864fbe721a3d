"""The SIP endpoint: UAC and UAS cores over the transaction layer (RFC 3261 §8, §12-15), sans-IO.

Theory of operation
-------------------
A :class:`UserAgent` owns a :class:`~callplane.sip.transaction.TransactionLayer`, the calls (:mod:`.calls`) and the
REGISTER client (:mod:`.regclient`). It has the usual sans-IO surface::

    receive_datagram(data, source, now) / receive(msg, source, now)     input from the transport
    datagrams_to_send() -> [(bytes, Peer)]                              output to the transport
    get_timer() -> float | None;  handle_timer(now)                     one deadline for the adapter to arm
    next_event() -> Event | None                                        frozen values for the engine (.events)

and an API for the engine: :meth:`invite`, :meth:`cancel`, :meth:`ring`, :meth:`answer`, :meth:`reject`,
:meth:`bye`, :meth:`hangup`, :meth:`reinvite`, :meth:`hold`, :meth:`resume`, :meth:`register`, :meth:`respond`.
Every input first goes through the transaction layer; its events are then drained and dispatched by kind
(``_on_request``, ``_on_cancel``, ``_on_ack``, ``_on_response``...). Client transactions we started are remembered
in ``_client`` with what they are for, so a response or timeout finds its call or registration.

What the transaction layer does for us (see its docstring): Via/branch/Max-Forwards on requests, 100 Trying,
absorbing retransmitted requests, the ACK of non-2xx finals, and the retransmission of our 2xx until its ACK
(``AckTimeout`` after 64*T1, which we turn into a BYE). What we do: dialogs, the ACK for a 2xx (re-sent for each
retransmitted 2xx), CANCEL only after a provisional, digest answers (once per realm unless ``stale=true``), SDP
offer/answer on re-INVITEs, and the method/Max-Forwards/Require checks of §8.2.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from callplane.core.ids import IdSource
from callplane.sip.calls import Call, CallStateError, PendingReinvite
from callplane.sip.dialog import Dialog, DialogEvent, next_hop, uri_destination
from callplane.sip.digest import Credentials, DigestClient, best_challenge
from callplane.sip.events import (
    CallAnswered,
    CallCancelled,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    DtmfReceived,
    Event,
    IncomingCall,
    MediaUpdated,
    RegisterReceived,
    ReinviteFailed,
)
from callplane.sip.headers import URI, Address, SipParseError, Via
from callplane.sip.message import Headers, Request, Response, can_answer, parse_message, response_destination
from callplane.sip.regclient import Registration, RegistrationClient
from callplane.sip.sdp import (
    Direction,
    MediaDescription,
    NegotiationError,
    SdpParseError,
    SessionDescription,
    answer_offer,
    change_direction,
    describe,
)
from callplane.sip.transaction import TimerConfig, TransactionLayer
from callplane.sip.transaction_events import (
    AckReceived,
    AckTimeout,
    CancelReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTimeout,
)

__all__ = ["CallStateError", "CredentialSource", "UserAgent", "ALLOWED", "KNOWN_METHODS"]

logger = logging.getLogger(__name__)

#: Methods we recognise (RFC 3261 and common extensions); anything else gets 501 (§8.2.1).
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH"}
    | {"MESSAGE", "REFER", "UPDATE"}
)
#: Methods we implement; a known method outside this list gets 405 with Allow (§8.2.1).
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO")

#: Headers an incoming INVITE hands to the engine besides the typed fields (plus every ``X-`` header).
_FORWARDED = frozenset(
    {"diversion", "history-info", "p-asserted-identity", "remote-party-id", "referred-by", "user-agent", "subject"}
)

CredentialSource = Credentials | Callable[[str], Credentials | None]
"""Outbound authentication: one set of credentials, or a lookup by realm."""


@dataclass(slots=True)
class _ClientTx:
    """What one of our client transactions is for."""

    kind: str  # "invite", "reinvite", "cancel", "bye", "options", "info", "register"
    handle: str
    request: Request
    peer: Peer
    realms: set[str] = field(default_factory=set)
    ack: Request | None = None  # INVITE/re-INVITE: the ACK we sent for its 2xx


class UserAgent:
    """UAC + UAS cores of one endpoint (see the module docstring).

    ``local`` maps a transport (``"UDP"``, ``"TCP"``) to the ``(host, port)`` we are reachable at: it is written into
    Via (by the transaction layer) and Contact. ``supported`` lists our codecs for answering offers.
    """

    def __init__(
        self,
        ids: IdSource,
        local: dict[str, tuple[str, int]],
        *,
        transport: str = "UDP",
        timers: TimerConfig | None = None,
        credentials: CredentialSource | None = None,
        outbound_proxy: str | None = None,
        user_agent: str = "callplane",
        supported: tuple[str, ...] = ("PCMU", "PCMA"),
        accept_register: bool = False,
    ) -> None:
        self.ids = ids
        self.local = {k.upper(): v for k, v in local.items()}
        self.transport = transport.upper()
        self.tl = TransactionLayer(ids, timers, self.local)
        self.credentials = credentials
        proxy = URI.parse(outbound_proxy) if outbound_proxy else None
        self.outbound_proxy = proxy.with_param("lr") if proxy is not None and not proxy.lr else proxy
        self.user_agent = user_agent
        self.supported = supported
        self.accept_register = accept_register
        self.allow = ", ".join(ALLOWED + (("REGISTER",) if accept_register else ()))
        self._digest = DigestClient(ids)
        self._events: deque[Event] = deque()
        self._calls: dict[str, Call] = {}
        self._by_server_key: dict[TransactionKey, str] = {}
        self._client: dict[TransactionKey, _ClientTx] = {}
        self._timers: list[tuple[float, int, str, str]] = []  # (deadline, token, kind, handle)
        self._tokens: dict[tuple[str, str], int] = {}
        self._seq = 0
        self.registrations = RegistrationClient(self)

    # =============================================================================================== sans-IO surface
    def receive_datagram(self, data: bytes, source: Peer, now: float) -> None:
        """Parse and handle one datagram (or stream frame). Malformed input never raises: a request whose Via,
        From, To, Call-ID and CSeq were readable gets a 400, anything else is dropped."""
        try:
            msg = parse_message(data, stream=source.reliable)
        except SipParseError as exc:
            partial = can_answer(exc)
            if partial is not None and partial.method != "ACK":
                response = partial.create_response(exc.status or 400, str(exc)[:60], to_tag=self.ids.tag())
                host, port = response_destination(partial.via, source.host, source.port)
                self.tl.send_stateless(response, source if source.reliable else Peer(source.transport, host, port))
            else:
                logger.debug("dropped unparsable input from %s:%s: %s", source.host, source.port, exc)
            return
        self.receive(msg, source, now)

    def receive(self, msg: Request | Response, source: Peer, now: float) -> None:
        """Handle one parsed message from the transport."""
        self.tl.receive(msg, source, now)
        self._drain(now)

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        return self.tl.datagrams_to_send()

    def get_timer(self) -> float | None:
        deadline = self.tl.get_timer()
        while self._timers:
            when, token, kind, handle = self._timers[0]
            if self._tokens.get((kind, handle)) == token:
                return when if deadline is None else min(when, deadline)
            heapq.heappop(self._timers)
        return deadline

    def handle_timer(self, now: float) -> None:
        self.tl.handle_timer(now)
        self._drain(now)
        while self._timers and self._timers[0][0] <= now:
            _, token, kind, handle = heapq.heappop(self._timers)
            if self._tokens.get((kind, handle)) != token:
                continue
            del self._tokens[(kind, handle)]
            if kind == "cancel":
                self._on_cancel_timeout(handle, now)
            elif kind == "register":
                self.registrations.on_refresh(handle, now)
        self._drain(now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def call(self, handle: str) -> Call:
        """The live call record (read it, do not change it). Raises :class:`CallStateError` if unknown."""
        call = self._calls.get(handle)
        if call is None:
            raise CallStateError(f"no call {handle}")
        return call

    # ================================================================================================ engine API: UAC
    def invite(
        self,
        target: str,
        from_uri: str,
        sdp: SessionDescription | None,
        now: float,
        *,
        to_uri: str | None = None,
        from_display: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        credentials: Credentials | None = None,
    ) -> str:
        """Send an INVITE (§13.2.1) to ``target`` and return the call handle (its Call-ID)."""
        uri = URI.parse(target)
        call_id = self.ids.call_id(self.local.get(self.transport, ("callplane", 0))[0])
        h = Headers()
        h.add("Max-Forwards", 70)
        if self.outbound_proxy is not None:
            h.add("Route", Address(self.outbound_proxy))
        h.add("From", Address(URI.parse(from_uri), from_display).with_tag(self.ids.tag()))
        h.add("To", Address(URI.parse(to_uri) if to_uri else uri))
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self.contact(URI.parse(from_uri).user))
        h.add("Allow", self.allow)
        h.add("User-Agent", self.user_agent)
        for name, value in headers:
            h.add(name, value)
        body = b""
        if sdp is not None:
            h.add("Content-Type", "application/sdp")
            body = bytes(sdp)
        request = Request("INVITE", uri, h, body)
        peer = self._destination(request)
        key = self.tl.send_request(request, peer, now)
        call = Call(call_id, "uac", "calling", request, key, peer, local_sdp=sdp, credentials=credentials)
        self._calls[call_id] = call
        self._track(key, _ClientTx("invite", call_id, request, peer), call)
        return call_id

    def cancel(self, handle: str, now: float) -> None:
        """Cancel an outgoing INVITE (§9.1). Before any provisional response the CANCEL waits for the first one."""
        call = self.call(handle)
        was = call.state
        call.apply("cancel")
        if was == "calling":
            call.cancel_pending = True
        elif was == "proceeding":
            self._send_cancel(call, now)

    # ================================================================================================ engine API: UAS
    def ring(self, handle: str, now: float, early_sdp: SessionDescription | None = None) -> None:
        """180 Ringing, or 183 Session Progress with early media when ``early_sdp`` is given (§13.3.1.1)."""
        call = self.call(handle)
        call.apply("ring")
        self._ensure_uas_dialog(call)
        if early_sdp is not None:
            call.local_sdp = early_sdp
        self._dialog_response(call, 183 if early_sdp is not None else 180, early_sdp, now)

    def answer(self, handle: str, sdp: SessionDescription, now: float) -> None:
        """200 OK with ``sdp`` (our answer, or our offer when the INVITE had none). The transaction layer retransmits
        it until the ACK arrives (§13.3.1.4)."""
        call = self.call(handle)
        call.apply("answer")
        dialog = self._ensure_uas_dialog(call)
        dialog.apply(DialogEvent.CONFIRM)
        call.local_sdp = self._next_version(call, sdp)
        self._dialog_response(call, 200, call.local_sdp, now)

    def reject(self, handle: str, status: int, now: float, reason: str | None = None) -> None:
        """A final 3xx-6xx to an incoming INVITE (404, 480, 486, 487, 488, 603...). The transaction layer gets its
        ACK."""
        if not 300 <= status < 700:
            raise ValueError("reject needs a 3xx-6xx status")
        call = self.call(handle)
        call.apply("reject")
        response = call.invite.create_response(status, reason, to_tag=call.local_tag)
        self.tl.send_response(response, now)
        self._forget(call)

    def respond(self, response: Response, now: float) -> None:
        """Send a response built by the engine for a request it was handed (REGISTER)."""
        self.tl.send_response(response, now)

    # ========================================================================================= engine API: dialogs
    def bye(self, handle: str, now: float) -> None:
        """End a confirmed call (§15.1). A UAS whose 2xx is not yet ACKed sends it once the ACK arrives."""
        call = self.call(handle)
        if call.state == "answered":
            call.bye_pending = True
            return
        call.apply("bye_sent")
        self._send_in_dialog(call, "BYE", now)

    def hangup(self, handle: str, now: float, status: int = 480) -> None:
        """End the call whatever its state: CANCEL, reject with ``status``, or BYE."""
        call = self._calls.get(handle)
        if call is None or call.state in ("ending", "ended", "cancelling"):
            return
        if call.role == "uac" and call.state in ("calling", "proceeding"):
            self.cancel(handle, now)
        elif call.role == "uas" and call.state in ("received", "ringing"):
            self.reject(handle, status, now)
        else:
            self.bye(handle, now)

    def reinvite(self, handle: str, sdp: SessionDescription, now: float) -> None:
        """Send a re-INVITE with a new offer (§14.1). Its ``o=`` version is raised above our last one if needed."""
        call = self.call(handle)
        if call.state != "confirmed" or call.reinvite is not None or call.dialog is None:
            raise CallStateError(f"call {handle}: cannot re-INVITE in state {call.state}")
        sdp = self._next_version(call, sdp)
        contact = self.contact(call.dialog.local.uri.user)
        request = call.dialog.create_request(
            "INVITE", contact=contact, body=bytes(sdp), content_type="application/sdp", extra=self._ua_headers()
        )
        key = self._send(call, "reinvite", request, now)
        call.reinvite = PendingReinvite(True, key, request, sdp)

    def hold(self, handle: str, now: float, direction: Direction = "sendonly") -> None:
        """Put the peer on hold: re-offer our last SDP as ``sendonly`` (or ``inactive``), RFC 3264 §8.4."""
        call = self.call(handle)
        if call.local_sdp is None:
            raise CallStateError(f"call {handle}: no local SDP to re-offer")
        self.reinvite(handle, change_direction(call.local_sdp, direction), now)

    def resume(self, handle: str, now: float) -> None:
        """Take the peer off hold: re-offer our last SDP as ``sendrecv``."""
        self.hold(handle, now, "sendrecv")

    # ===================================================================================================== helpers
    def contact(self, user: str | None = None, transport: str | None = None) -> Address:
        """Our Contact for ``transport`` (§8.1.1.8)."""
        transport = (transport or self.transport).upper()
        host, port = self.local.get(transport, ("127.0.0.1", 5060))
        params = (("transport", transport.lower()),) if transport != "UDP" else ()
        return Address(URI("sip", host, user or None, None, port, params))

    def _ua_headers(self) -> tuple[tuple[str, str], ...]:
        return (("User-Agent", self.user_agent),)

    def _destination(self, request: Request) -> Peer:
        host, port, transport = uri_destination(next_hop(request), self.transport)
        return Peer(transport, host, port)

    def _track(self, key: TransactionKey, ctx: _ClientTx, call: Call | None) -> None:
        self._client[key] = ctx
        if call is not None:
            call.keys.append(key)

    def _send(self, call: Call, kind: str, request: Request, now: float) -> TransactionKey:
        peer = self._destination(request)
        key = self.tl.send_request(request, peer, now)
        self._track(key, _ClientTx(kind, call.handle, request, peer), call)
        return key

    def _send_in_dialog(self, call: Call, method: str, now: float) -> TransactionKey:
        assert call.dialog is not None
        request = call.dialog.create_request(method, extra=self._ua_headers())
        return self._send(call, method.lower(), request, now)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _schedule(self, kind: str, handle: str, deadline: float) -> None:
        self._seq += 1
        self._tokens[(kind, handle)] = self._seq
        heapq.heappush(self._timers, (deadline, self._seq, kind, handle))

    def _unschedule(self, kind: str, handle: str) -> None:
        self._tokens.pop((kind, handle), None)

    def _forget(self, call: Call) -> None:
        self._calls.pop(call.handle, None)
        self._by_server_key.pop(call.invite_key, None)
        for key in call.keys:
            self._client.pop(key, None)
        self._unschedule("cancel", call.handle)

    def _end(self, call: Call, event: Event | None) -> None:
        """Report the call's last event once and drop it when it is over."""
        if event is not None and not call.ended_emitted:
            call.ended_emitted = True
            self._emit(event)
        if call.state == "ended":
            self._forget(call)

    def _next_version(self, call: Call, sdp: SessionDescription) -> SessionDescription:
        """RFC 3264 §8: each new local description has a higher ``o=`` version than the previous one."""
        previous = call.local_sdp
        if previous is not None and sdp.origin.version <= previous.origin.version and sdp != previous:
            return sdp.with_version(previous.origin.version + 1)
        return sdp

    def _describe(self, sdp: SessionDescription | None) -> MediaDescription | None:
        if sdp is None:
            return None
        try:
            return describe(sdp, self.supported)
        except NegotiationError:
            return None

    @staticmethod
    def _sdp_of(message: Request | Response) -> SessionDescription | None:
        """The SDP body, if any (None for no body, another content type, or unparsable SDP)."""
        if not message.body or (message.content_type or "").split(";")[0].strip().lower() != "application/sdp":
            return None
        try:
            return SessionDescription.parse(message.body)
        except SdpParseError:
            return None

    def _credentials_for(self, call: Call | None, realm: str) -> Credentials | None:
        if call is not None and call.credentials is not None:
            return call.credentials
        source = self.credentials
        if source is None:
            return None
        creds = source(realm) if callable(source) else source
        if creds is not None and creds.realm is not None and creds.realm != realm:
            return None
        return creds

    def authorize(self, ctx: _ClientTx, response: Response, call: Call | None) -> Request | None:
        """A copy of ``ctx.request`` answering the 401/407 ``response`` (§22.2), or None to give up: no usable
        challenge, no credentials, or a second non-stale challenge for a realm we already answered."""
        proxy = response.status == 407
        challenge = best_challenge(response.headers.get_all("proxy-authenticate" if proxy else "www-authenticate"))
        if challenge is None or (challenge.realm in ctx.realms and not challenge.stale):
            return None
        creds = self._credentials_for(call, challenge.realm)
        if creds is None:
            return None
        old = ctx.request
        headers = old.headers.copy()
        headers.remove("via")
        name = "Proxy-Authorization" if proxy else "Authorization"
        kept = [v for v in headers.get_all(name) if f'realm="{challenge.realm}"' not in v]
        headers.remove(name)
        for value in kept:
            headers.add(name, value)
        request = Request(old.method, old.uri, headers, old.body)
        request.headers.add(name, self._digest.authorization(challenge, creds, old.method, str(old.uri), old.body))
        ctx.realms.add(challenge.realm)
        return request

    # ================================================================================================== dispatching
    def _drain(self, now: float) -> None:
        tl = self.tl
        while (ev := tl.next_event()) is not None:
            if isinstance(ev, ResponseReceived):
                self._on_response(ev.response, ev.key, now)
            elif isinstance(ev, RequestReceived):
                self._on_request(ev.request, ev.source, ev.key, now)
            elif isinstance(ev, AckReceived):
                self._on_ack(ev.request, now)
            elif isinstance(ev, CancelReceived):
                self._on_cancel(ev, now)
            elif isinstance(ev, StrayResponse):
                self._on_stray(ev.response)
            elif isinstance(ev, TransactionTimeout):
                self._on_timeout(ev.key, now)
            elif isinstance(ev, AckTimeout):
                self._on_ack_timeout(ev.call_id, ev.cseq, now)

    # -------------------------------------------------------------------------------------------- requests (UAS)
    def _reply(
        self,
        request: Request,
        status: int,
        now: float,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: tuple[tuple[str, object], ...] = (),
    ) -> None:
        response = request.create_response(status, reason, to_tag=to_tag or self.ids.tag())
        for name, value in headers:
            response.headers.add(name, value)
        self.tl.send_response(response, now)

    def _on_request(self, request: Request, source: Peer, key: TransactionKey, now: float) -> None:
        method = request.method
        if method not in KNOWN_METHODS:
            self._reply(request, 501, now, headers=(("Allow", self.allow),))
            return
        if method not in ALLOWED and not (method == "REGISTER" and self.accept_register):
            self._reply(request, 405, now, headers=(("Allow", self.allow),))
            return
        if request.max_forwards == 0:
            self._reply(request, 483, now)
            return
        required = request.headers.get_all("require")
        if required:
            self._reply(request, 420, now, headers=(("Unsupported", ", ".join(required)),))
            return
        if request.to.tag is not None:
            self._on_in_dialog(request, key, now)
        elif method == "INVITE":
            self._on_invite(request, source, key, now)
        elif method == "OPTIONS":
            self._reply(request, 200, now, headers=(("Allow", self.allow), ("Accept", "application/sdp")))
        elif method == "REGISTER":
            self._emit(RegisterReceived(key, request, source))
        else:
            self._reply(request, 481, now)

    def _on_invite(self, request: Request, source: Peer, key: TransactionKey, now: float) -> None:
        handle = request.call_id
        if handle in self._calls:
            self._reply(request, 482, now)  # same Call-ID, new transaction: a merged or looped request (§8.2.2.2)
            return
        if not request.contacts:
            self._reply(request, 400, now, "Missing Contact")
            return
        offer: SessionDescription | None = None
        if request.body:
            ctype = (request.content_type or "").split(";")[0].strip().lower()
            if ctype != "application/sdp":
                self._reply(request, 415, now, headers=(("Accept", "application/sdp"),))
                return
            try:
                offer = SessionDescription.parse(request.body)
                describe(offer, self.supported)
            except (SdpParseError, NegotiationError):
                self._reply(request, 488, now)
                return
        call = Call(handle, "uas", "received", request, key, source, local_tag=self.ids.tag(), remote_sdp=offer)
        self._calls[handle] = call
        self._by_server_key[key] = handle
        forwarded = tuple(
            (name, value)
            for name, value in request.headers
            if name.lower().startswith("x-") or name.lower() in _FORWARDED
        )
        self._emit(
            IncomingCall(
                call=handle,
                request_uri=str(request.uri),
                from_uri=str(request.from_.uri),
                from_display=request.from_.display_name,
                to_uri=str(request.to.uri),
                media=self._describe(offer),
                sdp=str(offer) if offer is not None else None,
                headers=forwarded,
                source=(source.host, source.port, source.transport),
            )
        )

    def _ensure_uas_dialog(self, call: Call) -> Dialog:
        if call.dialog is None:
            assert call.local_tag is not None
            call.dialog = Dialog.from_request(call.invite, call.local_tag)
        return call.dialog

    def _dialog_response(
        self, call: Call, status: int, sdp: SessionDescription | None, now: float, request: Request | None = None
    ) -> None:
        """A dialog-creating (or re-INVITE) response: Record-Route copied and Contact added (§12.1.1)."""
        request = request or call.invite
        response = request.create_response(status, to_tag=call.local_tag)
        for value in request.headers.get_all("record-route"):
            response.headers.add("Record-Route", value)
        user = call.dialog.local.uri.user if call.dialog is not None else None
        response.headers.add("Contact", self.contact(user))
        if status >= 200:
            response.headers.add("Allow", self.allow)
        if sdp is not None:
            response.headers.add("Content-Type", "application/sdp")
            response.body = bytes(sdp)
        self.tl.send_response(response, now)

    def _on_cancel(self, ev: CancelReceived, now: float) -> None:
        handle = self._by_server_key.get(ev.invite_key) if ev.invite_key is not None else None
        call = self._calls.get(handle) if handle is not None else None
        if call is None:
            self._reply(ev.request, 481, now)
            return
        self._reply(ev.request, 200, now, to_tag=call.local_tag)
        if call.can("cancelled"):  # otherwise our final response already went out: CANCEL has no effect (§9.2)
            call.apply("cancelled")
            self.tl.send_response(call.invite.create_response(487, to_tag=call.local_tag), now)
            self._end(call, CallCancelled(call.handle))

    def _on_ack(self, request: Request, now: float) -> None:
        call = self._calls.get(request.call_id)
        if call is None or call.dialog is None or request.from_.tag != call.dialog.id.remote_tag:
            return
        seq = request.cseq.seq
        pending = call.reinvite
        if pending is not None and not pending.outgoing and pending.request.cseq.seq == seq:
            call.reinvite = None
            if pending.offer is None:  # offerless re-INVITE: the peer's answer is in the ACK
                self._update_media(call, self._sdp_of(request))
            return
        if call.state == "answered" and seq == call.invite.cseq.seq:
            call.apply("ack")
            media = None
            if call.remote_sdp is None:  # late offer: the answer comes in the ACK (§13.3.1)
                call.remote_sdp = self._sdp_of(request)
                media = self._describe(call.remote_sdp)
            self._emit(CallConfirmed(call.handle, media))
            if call.bye_pending:
                call.bye_pending = False
                self.bye(call.handle, now)

    def _on_ack_timeout(self, call_id: str, cseq: int, now: float) -> None:
        """Our 2xx was never ACKed (§13.3.1.4): confirm and immediately end the dialog with a BYE."""
        call = self._calls.get(call_id)
        if call is None or not call.can("ack_timeout"):
            return
        call.apply("ack_timeout")
        call.reinvite = None
        self._send_in_dialog(call, "BYE", now)
        self._end(call, CallEnded(call.handle, "timeout", 408, "No ACK"))

    def _on_in_dialog(self, request: Request, key: TransactionKey, now: float) -> None:
        call = self._calls.get(request.call_id)
        dialog = call.dialog if call is not None else None
        if (
            call is None
            or dialog is None
            or request.to.tag != dialog.id.local_tag
            or request.from_.tag != dialog.id.remote_tag
        ):
            self._reply(request, 481, now)
            return
        status = dialog.check_request(request)
        if status is not None:
            self._reply(request, status, now, to_tag=dialog.id.local_tag, headers=(("Retry-After", "1"),))
            return
        method = request.method
        tag = dialog.id.local_tag
        if method == "BYE":
            self._reply(request, 200, now, to_tag=tag)
            if call.can("bye_received"):
                was = call.state
                call.apply("bye_received")
                dialog.apply(DialogEvent.TERMINATE)
                if was != "ending":
                    self._end(call, CallEnded(call.handle, "remote"))
        elif method == "INVITE":
            self._on_reinvite(call, request, key, now)
        elif method == "INFO":
            self._reply(request, 200, now, to_tag=tag)
            digit, duration = _dtmf_of(request)
            if digit is not None:
                self._emit(DtmfReceived(call.handle, digit, duration))
        elif method == "OPTIONS":
            self._reply(request, 200, now, to_tag=tag, headers=(("Allow", self.allow), ("Accept", "application/sdp")))
        else:
            self._reply(request, 405, now, to_tag=tag, headers=(("Allow", self.allow),))

    def _on_reinvite(self, call: Call, request: Request, key: TransactionKey, now: float) -> None:
        """The peer's re-INVITE (§14.2): answer its offer from our last SDP, or offer in the 2xx if it had none."""
        assert call.dialog is not None
        tag = call.dialog.id.local_tag
        if call.reinvite is not None:
            if call.reinvite.outgoing:
                self._reply(request, 491, now, to_tag=tag)  # glare (§14.1)
            else:
                self._reply(request, 500, now, to_tag=tag, headers=(("Retry-After", "2"),))
            return
        if call.state != "confirmed" or call.local_sdp is None:
            self._reply(request, 491, now, to_tag=tag)
            return
        offer = self._sdp_of(request)
        if request.body and offer is None:
            self._reply(request, 488, now, to_tag=tag)
            return
        local = call.local_sdp
        if offer is not None:
            section = local.audio()
            conn = (section.connection if section is not None else None) or local.connection
            try:
                answer = answer_offer(
                    offer,
                    conn.address if conn is not None else "0.0.0.0",
                    section.port if section is not None else 0,
                    session_id=local.origin.session_id,
                    version=local.origin.version + 1,
                    supported=self.supported,
                    direction=call.direction,
                    username=local.origin.username,
                )
            except NegotiationError:
                self._reply(request, 488, now, to_tag=tag)
                return
        else:
            answer = local.with_version(local.origin.version + 1)
        call.dialog.refresh_target(request)
        call.local_sdp = answer
        call.reinvite = PendingReinvite(False, key, request, offer, answered=True)
        self._dialog_response(call, 200, answer, now, request)
        if offer is not None:
            self._update_media(call, offer)

    def _update_media(self, call: Call, remote: SessionDescription | None) -> None:
        media = self._describe(remote)
        if remote is None or media is None:
            return
        call.remote_sdp = remote
        self._emit(MediaUpdated(call.handle, media, str(remote)))

    # ------------------------------------------------------------------------------------------- responses (UAC)
    def _on_response(self, response: Response, key: TransactionKey, now: float) -> None:
        ctx = self._client.get(key)
        if ctx is None:
            return
        if ctx.kind == "register":
            self.registrations.on_response(ctx, response, now)
            return
        call = self._calls.get(ctx.handle)
        if call is None:
            if ctx.kind == "invite" and 200 <= response.status < 300 and ctx.ack is not None:
                self.tl.send_stateless(ctx.ack, ctx.peer)
            return
        if ctx.kind == "invite":
            self._on_invite_response(call, ctx, key, response, now)
        elif ctx.kind == "reinvite":
            self._on_reinvite_response(call, ctx, response, now)
        elif response.status >= 200:
            self._on_other_response(call, ctx, response, now)

    def _on_invite_response(
        self, call: Call, ctx: _ClientTx, key: TransactionKey, response: Response, now: float
    ) -> None:
        status = response.status
        if status < 200:
            if call.state in ("calling", "proceeding", "cancelling"):
                call.apply("provisional")
            if status > 100 and response.to.tag is not None and call.dialog is None:
                call.dialog = Dialog.from_response(call.invite, response)
            if status > 100 and call.state != "cancelling":
                self._emit(CallProgress(call.handle, status, response.reason, self._describe(self._sdp_of(response))))
            if call.cancel_pending:
                call.cancel_pending = False
                call.apply("cancel")
                self._send_cancel(call, now)
            return
        if status < 300:
            self._on_invite_2xx(call, ctx, response, now)
            return
        if status in (401, 407) and call.state in ("calling", "proceeding"):
            request = self.authorize(ctx, response, call)
            if request is not None:
                request.headers.set("CSeq", f"{call.invite.cseq.seq + 1} INVITE")
                call.apply("challenged")
                call.invite = request
                auth = ("authorization", "proxy-authorization")
                call.auth_headers = tuple((n, v) for n, v in request.headers if n.lower() in auth)
                new_key = self.tl.send_request(request, call.peer, now)
                call.invite_key = new_key
                self._track(new_key, _ClientTx("invite", call.handle, request, call.peer, ctx.realms), call)
                return
        was = call.state
        call.apply("failure")
        if was == "cancelling":
            self._unschedule("cancel", call.handle)
        headers = tuple((n, v) for n, v in response.headers if n.lower() in ("contact", "reason", "retry-after"))
        self._end(call, CallFailed(call.handle, status, response.reason, headers))

    def _on_invite_2xx(self, call: Call, ctx: _ClientTx, response: Response, now: float) -> None:
        tag = response.to.tag
        dialog = call.dialog
        if ctx.ack is not None and dialog is not None and tag == dialog.id.remote_tag:
            self.tl.send_stateless(ctx.ack, ctx.peer)  # a retransmitted 2xx (§13.2.2.4)
            return
        if ctx.ack is not None or tag is None:
            # A 2xx from another fork after we settled on one: ACK it and hang that dialog up (§13.2.2.4).
            if tag is not None:
                other = Dialog.from_response(call.invite, response)
                self._ack_and_bye(other, call, now)
            return
        if dialog is None or dialog.id.remote_tag != tag:
            dialog = call.dialog = Dialog.from_response(call.invite, response)
        else:
            dialog.confirm(response)
        ack = dialog.create_request("ACK", self._new_via(), cseq=call.invite.cseq.seq, extra=call.auth_headers)
        peer = self._destination(ack)
        self.tl.send_stateless(ack, peer)
        ctx.ack, ctx.peer = ack, peer
        was = call.state
        if was == "calling" and call.cancel_pending or was == "cancelling":
            # The engine cancelled: the 2xx crossed it. Accept the dialog only to end it (§9.1).
            call.apply("success" if was == "cancelling" else "bye_sent")
            self._unschedule("cancel", call.handle)
            self._send_in_dialog(call, "BYE", now)
            self._end(call, CallFailed(call.handle, 487, "Request Terminated"))
            return
        call.apply("success")
        call.remote_sdp = self._sdp_of(response)
        headers = tuple((n, v) for n, v in response.headers if n.lower().startswith("x-"))
        remote = call.remote_sdp
        self._emit(CallAnswered(call.handle, self._describe(remote), str(remote) if remote else None, headers))

    def _ack_and_bye(self, dialog: Dialog, call: Call, now: float) -> None:
        ack = dialog.create_request("ACK", self._new_via(), cseq=call.invite.cseq.seq, extra=call.auth_headers)
        self.tl.send_stateless(ack, self._destination(ack))
        bye = dialog.create_request("BYE", extra=self._ua_headers())
        self.tl.send_request(bye, self._destination(bye), now)

    def _new_via(self) -> Via:
        host, port = self.local.get(self.transport, ("127.0.0.1", 5060))
        return Via(self.transport, host, port, (("branch", self.ids.branch()), ("rport", None)))

    def _send_cancel(self, call: Call, now: float) -> None:
        """CANCEL per §9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number, Route and top Via."""
        src = call.invite.headers
        h = Headers()
        h.add("Via", src.get_all("via")[0])
        h.add("Max-Forwards", 70)
        for route in src.get_all("route"):
            h.add("Route", route)
        for name in ("From", "To", "Call-ID"):
            h.add(name, src.get(name))
        h.add("CSeq", f"{call.invite.cseq.seq} CANCEL")
        cancel = Request("CANCEL", call.invite.uri, h)
        key = self.tl.send_request(cancel, call.peer, now)
        self._track(key, _ClientTx("cancel", call.handle, cancel, call.peer), call)
        # §9.1: without a final response within 64*T1 the INVITE is considered cancelled.
        self._schedule("cancel", call.handle, now + self.tl.timers.timeout)

    def _on_cancel_timeout(self, handle: str, now: float) -> None:
        call = self._calls.get(handle)
        if call is not None and call.state == "cancelling":
            call.apply("failure")
            self._end(call, CallFailed(handle, 408, "Request Timeout"))

    def _on_reinvite_response(self, call: Call, ctx: _ClientTx, response: Response, now: float) -> None:
        status = response.status
        pending = call.reinvite
        dialog = call.dialog
        assert dialog is not None
        if status < 200:
            return
        if status < 300:
            if ctx.ack is not None:
                self.tl.send_stateless(ctx.ack, ctx.peer)
                return
            ack = dialog.create_request("ACK", self._new_via(), cseq=ctx.request.cseq.seq)
            ctx.ack, ctx.peer = ack, self._destination(ack)
            self.tl.send_stateless(ack, ctx.peer)
            dialog.refresh_target(response)
            if pending is not None and pending.outgoing:
                call.reinvite = None
                if pending.offer is not None:
                    call.local_sdp = pending.offer
                    section = pending.offer.audio()
                    call.direction = (section.direction if section is not None else None) or "sendrecv"
                self._update_media(call, self._sdp_of(response))
            return
        if status in (401, 407):
            request = self.authorize(ctx, response, call)
            if request is not None:
                request.headers.set("CSeq", f"{dialog.next_seq()} INVITE")
                key = self._send(call, "reinvite", request, now)
                self._client[key].realms = ctx.realms
                call.reinvite = PendingReinvite(True, key, request, pending.offer if pending else None)
                return
        call.reinvite = None
        self._emit(ReinviteFailed(call.handle, status, response.reason))
        if status in (408, 481):  # §12.2.1.2: the dialog is gone
            self._terminate(call, now, send_bye=status == 408, status=status, reason=response.reason)

    def _terminate(self, call: Call, now: float, *, send_bye: bool, status: int, reason: str) -> None:
        if send_bye and call.can("bye_sent"):
            call.apply("bye_sent")
            self._send_in_dialog(call, "BYE", now)
            self._end(call, CallEnded(call.handle, "timeout", status, reason))
        else:
            call.state = "ended"
            self._end(call, CallEnded(call.handle, "remote", status, reason))

    def _on_other_response(self, call: Call, ctx: _ClientTx, response: Response, now: float) -> None:
        status = response.status
        if status in (401, 407) and ctx.kind == "bye" and call.dialog is not None:
            request = self.authorize(ctx, response, call)
            if request is not None:
                request.headers.set("CSeq", f"{call.dialog.next_seq()} BYE")
                key = self._send(call, "bye", request, now)
                self._client[key].realms = ctx.realms
                return
        if ctx.kind == "bye" and call.can("bye_done"):
            call.apply("bye_done")
            self._end(call, CallEnded(call.handle, "local", status, response.reason))

    def _on_stray(self, response: Response) -> None:
        """A 2xx retransmission after the INVITE transaction ended (§13.2.2.4): ACK it again."""
        if response.status < 200 or response.status >= 300 or response.cseq.method != "INVITE":
            return
        call = self._calls.get(response.call_id)
        if call is None or call.dialog is None or response.to.tag != call.dialog.id.remote_tag:
            return
        for key in reversed(call.keys):
            ctx = self._client.get(key)
            if ctx is not None and ctx.ack is not None and ctx.request.cseq.seq == response.cseq.seq:
                self.tl.send_stateless(ctx.ack, ctx.peer)
                return

    def _on_timeout(self, key: TransactionKey, now: float) -> None:
        ctx = self._client.get(key)
        if key.role == "server" or ctx is None:
            return
        if ctx.kind == "register":
            self.registrations.on_timeout(ctx)
            return
        call = self._calls.get(ctx.handle)
        if call is None:
            return
        if ctx.kind == "invite" and call.can("failure"):
            call.apply("failure")
            self._end(call, CallFailed(call.handle, 408, "Request Timeout"))
        elif ctx.kind == "reinvite":
            call.reinvite = None
            self._emit(ReinviteFailed(call.handle, 408, "Request Timeout"))
            self._terminate(call, now, send_bye=True, status=408, reason="Request Timeout")
        elif ctx.kind == "bye" and call.can("bye_done"):
            call.apply("bye_done")
            self._end(call, CallEnded(call.handle, "local", 408, "Request Timeout"))

    # -------------------------------------------------------------------------------------- registration support
    def send_register(self, registration: Registration, request: Request, now: float) -> None:
        """Used by :class:`~callplane.sip.regclient.RegistrationClient` to start a REGISTER transaction."""
        peer = self._destination(request)
        key = self.tl.send_request(request, peer, now)
        self._client[key] = _ClientTx("register", registration.handle, request, peer, registration.realms)
        registration.key = key

    def forget_transaction(self, key: TransactionKey | None) -> None:
        if key is not None:
            self._client.pop(key, None)

    def register(self, registrar: str, aor: str, now: float, *, expires: int = 3600) -> str:
        """Register our Contact for ``aor`` at ``registrar`` (§10.2) and keep it refreshed. Returns a handle."""
        return self.registrations.register(registrar, aor, now, expires=expires)

    def unregister(self, handle: str, now: float) -> None:
        """Remove our binding (REGISTER with Expires: 0)."""
        self.registrations.unregister(handle, now)


def _dtmf_of(request: Request) -> tuple[str | None, int | None]:
    """A digit from an INFO body: ``application/dtmf-relay`` (``Signal=5``, ``Duration=160``) or
    ``application/dtmf`` (the digit alone)."""
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", "replace")
    if ctype == "application/dtmf-relay":
        values: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip().lower()] = value.strip()
        signal = values.get("signal")
        duration = values.get("duration", "")
        if signal and len(signal) == 1 and signal in "0123456789*#ABCDabcd":
            return signal.upper(), int(duration) if duration.isdigit() else None
    elif ctype == "application/dtmf":
        digit = text.strip()
        if len(digit) == 1 and digit in "0123456789*#ABCDabcd":
            return digit.upper(), None
    return None, None
