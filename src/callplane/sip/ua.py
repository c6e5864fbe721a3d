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

Layout: :mod:`.uacore` (state and helpers), :mod:`.uas` (requests we receive), :mod:`.uac` (responses to ours),
:mod:`.regclient` (REGISTER client), :mod:`.calls` (the per-call state table), :mod:`.events` (what the engine gets).
This module joins them with the sans-IO surface and the engine API.
"""

from __future__ import annotations

import heapq
import logging

from callplane.sip.calls import Call, CallStateError, PendingReinvite
from callplane.sip.dialog import DialogEvent
from callplane.sip.digest import Credentials
from callplane.sip.events import Event
from callplane.sip.headers import URI, Address, SipParseError
from callplane.sip.message import Headers, Request, Response, error_response, parse_message
from callplane.sip.sdp import Direction, SessionDescription, change_direction
from callplane.sip.transaction_events import (
    AckReceived,
    AckTimeout,
    CancelReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTimeout,
    TransportError,
    TxEvent,
)
from callplane.sip.uac import UacCore
from callplane.sip.uacore import ALLOWED, KNOWN_METHODS, ClientTx, CredentialSource
from callplane.sip.uas import UasCore

__all__ = ["ALLOWED", "KNOWN_METHODS", "CallStateError", "CredentialSource", "UserAgent"]

logger = logging.getLogger(__name__)


class UserAgent(UasCore, UacCore):
    """UAC + UAS cores of one endpoint (see the module docstring).

    ``local`` maps a transport (``"UDP"``, ``"TCP"``) to the ``(host, port)`` we are reachable at: it is written into
    Via (by the transaction layer) and Contact. ``supported`` lists our codecs for answering offers.
    """

    def receive_datagram(self, data: bytes, source: Peer, now: float) -> None:
        """Parse and handle one datagram (or stream frame). Malformed input never raises: a request that can be
        answered gets a 400 (or the error's own status, see ``message.error_response``), anything else is dropped."""
        try:
            msg = parse_message(data, stream=source.reliable)
        except SipParseError as exc:
            answer = error_response(exc, source.host, source.port, self.ids.tag())
            if answer is not None:
                response, host, port = answer
                self.tl.send_stateless(response, source if source.reliable else Peer(source.transport, host, port))
            else:
                logger.debug("dropped unparsable input from %s:%s: %s", source.host, source.port, exc)
            return
        self.receive(msg, source, now)

    def receive(self, msg: Request | Response, source: Peer, now: float) -> None:
        """Handle one parsed message from the transport."""
        self.tl.receive(msg, source, now)
        self._drain(now)

    def transport_failed(self, peer: Peer, now: float) -> None:
        """The adapter could not reach ``peer`` (§17.1.4): its transactions end, calls fail with 503."""
        self.tl.transport_failed(peer, now)
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
        self._track(key, ClientTx("invite", call_id, request, peer), call)
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

    def _drain(self, now: float) -> None:
        tl = self.tl
        while (ev := tl.next_event()) is not None:
            self.on_tx_event(ev, now)

    def on_tx_event(self, ev: TxEvent, now: float) -> None:
        """Dispatch one transaction-layer event. Public for adapters that own the transaction layer themselves
        (pass it as ``tl=`` and call this from their event callback); otherwise :meth:`receive` drains for us.

        This is the UA's one error boundary: a header the parser left lazy (Contact, Record-Route, Route) that turns
        out malformed is checked before any state changes; a request is answered 400 and a response dropped."""
        message = getattr(ev, "request", None) or getattr(ev, "response", None)
        if message is not None:
            try:
                _ = message.contacts
                for name in ("record-route", "route"):
                    for value in message.headers.get_all(name):
                        Address.parse(value)
            except SipParseError as exc:
                self._malformed(ev, exc, now)
                return
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
        elif isinstance(ev, TransportError):
            self._on_timeout(ev.key, now, 503, "Service Unavailable")

    def _malformed(self, ev: TxEvent, exc: SipParseError, now: float) -> None:
        if isinstance(ev, RequestReceived | CancelReceived):
            self._reply(ev.request, exc.status or 400, now, str(exc)[:60])
        elif isinstance(ev, ResponseReceived) and ev.key in self._client and ev.response.status >= 200:
            # A final response we cannot use still ends the transaction: report it as a failure.
            self._on_timeout(ev.key, now, 502, "Bad Gateway")
        logger.info("malformed %s: %s", type(ev).__name__, exc)

    def register(self, registrar: str, aor: str, now: float, *, expires: int = 3600) -> str:
        """Register our Contact for ``aor`` at ``registrar`` (§10.2) and keep it refreshed. Returns a handle."""
        return self.registrations.register(registrar, aor, now, expires=expires)

    def unregister(self, handle: str, now: float) -> None:
        """Remove our binding (REGISTER with Expires: 0)."""
        self.registrations.unregister(handle, now)
