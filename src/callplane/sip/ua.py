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
:meth:`bye`, :meth:`hangup`, :meth:`reinvite`, :meth:`hold`, :meth:`resume`, :meth:`register`, :meth:`respond`,
and for a peer's re-INVITE handed to the engine (``relay_reinvites``): :meth:`relay_reinvites_of`,
:meth:`answer_reinvite`, :meth:`reject_reinvite`.
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
from collections.abc import Sequence

from callplane.sip.calls import Call, CallStateError, PendingReinvite
from callplane.sip.dialog import DialogEvent
from callplane.sip.digest import Credentials
from callplane.sip.events import CallEnded, CallFailed, Event
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
from callplane.sip.uas import UasCore, checked_headers

__all__ = ["ALLOWED", "KNOWN_METHODS", "RING_TIMEOUT", "CallStateError", "CredentialSource", "UserAgent"]

#: Reason of the CallFailed (``no_answer=True``) reported when an outgoing call's ring timeout expires.
RING_TIMEOUT = "Ring Timeout"

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
        """Handle one parsed message from the transport. Never raises (see :meth:`on_tx_event`)."""
        try:
            self.tl.receive(msg, source, now)
        except Exception as exc:  # a bug in the transaction layer: count and log it, never raise to the transport
            self._fault(None, msg, exc, now)
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
        try:
            self.tl.handle_timer(now)
        except Exception as exc:  # same boundary as receive
            self._fault(None, None, exc, now)
        self._drain(now)
        while self._timers and self._timers[0][0] <= now:
            _, token, kind, handle = heapq.heappop(self._timers)
            if self._tokens.get((kind, handle)) != token:
                continue
            del self._tokens[(kind, handle)]
            try:
                self._on_ua_timer(kind, handle, now)
            except Exception as exc:  # same boundary as on_tx_event
                self._fault(None, None, exc, now, handle)
        self._drain(now)

    def _on_ua_timer(self, kind: str, handle: str, now: float) -> None:
        if kind == "cancel":
            self._on_cancel_timeout(handle, now)
        elif kind == "ring":
            self._on_ring_timeout(handle, now)
        elif kind == "reinvite":
            self._on_glare_timer(handle, now)
        elif kind == "register":
            self.registrations.on_refresh(handle, now)

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
        ring_timeout: float | None = None,
    ) -> str:
        """Send an INVITE (§13.2.1) to ``target`` and return the call handle (its Call-ID). With ``sdp`` None the
        INVITE has no offer: the 2xx brings one and the engine answers it with :meth:`ack`.

        ``ring_timeout``: seconds from now until an unanswered call is given up. At that deadline the engine gets
        ``CallFailed(status=487, reason="Ring Timeout", no_answer=True)`` and the INVITE is cancelled (the CANCEL
        waits for a provisional if none has arrived yet, §9.1)."""
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
        self._add_call(call)
        self._track(key, ClientTx("invite", call_id, request, peer), call)
        if ring_timeout is not None:
            self._schedule("ring", call_id, now + ring_timeout)
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

    def _on_ring_timeout(self, handle: str, now: float) -> None:
        call = self._calls.get(handle)
        if call is None or call.role != "uac" or call.state not in ("calling", "proceeding") or call.cancel_pending:
            return  # answered, failed or already being cancelled
        self.cancel(handle, now)
        self._end(call, CallFailed(handle, 487, RING_TIMEOUT, no_answer=True))

    def ring(
        self,
        handle: str,
        now: float,
        early_sdp: SessionDescription | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """180 Ringing, or 183 Session Progress with early media when ``early_sdp`` is given (§13.3.1.1).

        ``headers`` are added to the response as given (P-Asserted-Identity, ``X-`` headers...); see
        :func:`~callplane.sip.uas.checked_headers` for what is refused."""
        extra = checked_headers(headers)
        call = self.call(handle)
        call.apply("ring")
        self._ensure_uas_dialog(call)
        if early_sdp is not None:
            call.local_sdp = early_sdp
        self._dialog_response(call, 183 if early_sdp is not None else 180, early_sdp, now, headers=extra)

    def answer(
        self, handle: str, sdp: SessionDescription, now: float, *, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """200 OK with ``sdp`` (our answer, or our offer when the INVITE had none). The transaction layer retransmits
        it until the ACK arrives (§13.3.1.4). ``headers`` as for :meth:`ring`."""
        extra = checked_headers(headers)
        call = self.call(handle)
        call.apply("answer")
        dialog = self._ensure_uas_dialog(call)
        dialog.apply(DialogEvent.CONFIRM)
        call.local_sdp = self._next_version(call, sdp)
        self._dialog_response(call, 200, call.local_sdp, now, headers=extra)

    def reject(
        self,
        handle: str,
        status: int,
        now: float,
        reason: str | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A final 3xx-6xx to an incoming INVITE (404, 480, 486, 487, 488, 603...). The transaction layer gets its
        ACK. ``headers`` are added as given: Reason (RFC 3326), Contact for a 3xx redirect, Retry-After, ``X-``..."""
        extra = _checked_failure(status, headers, allow_contact=True)
        call = self.call(handle)
        call.apply("reject")
        self._send_failure(call, call.invite, status, reason, extra, now)
        self._remember_final(call)
        self._forget(call)

    def respond(self, response: Response, now: float) -> None:
        """Send a response built by the engine for a request it was handed (REGISTER)."""
        self.tl.send_response(response, now)

    def ack(self, handle: str, sdp: SessionDescription, now: float) -> None:
        """Late offer: ACK the 2xx with ``sdp``, our answer to the offer it carried (``CallAnswered.needs_answer``;
        RFC 3261 §13.2.2.4). The 2xx is retransmitted by the peer until this ACK arrives, for at most 64*T1."""
        call = self.call(handle)
        if not call.answer_due:
            raise CallStateError(f"call {handle}: no 2xx waiting for an answer")
        self._answer_late_offer(call, self._next_version(call, sdp))

    def bye(self, handle: str, now: float) -> None:
        """End a confirmed call (§15.1). A UAS whose 2xx is not yet ACKed sends it once the ACK arrives; a UAC that
        still owes the ACK of a late offer sends it first, refusing the offer."""
        call = self.call(handle)
        if call.answer_due:
            self._answer_late_offer(call, None)
        if call.state == "answered":
            call.bye_pending = True
            return
        self._end_pending_reinvite(call, now)  # a relayed re-INVITE still waiting for the engine gets 487
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
        if call.state != "confirmed" or call.reinvite is not None or call.dialog is None or call.answer_due:
            raise CallStateError(f"call {handle}: cannot re-INVITE in state {call.state}")
        call.glare_retries = 0
        self._unschedule("reinvite", handle)  # a new offer replaces one waiting to be retried after a 491
        call.glare_offer = None
        self._send_reinvite(call, sdp, now)

    def info(self, handle: str, body: bytes, content_type: str, now: float) -> None:
        """An in-dialog INFO (RFC 6086), e.g. ``application/dtmf-relay``. A 481 or 408 to it (or no answer) ends the
        call (§12.2.1.2)."""
        call = self.call(handle)
        if call.state != "confirmed" or call.dialog is None or call.answer_due:
            raise CallStateError(f"call {handle}: cannot send INFO in state {call.state}")
        request = call.dialog.create_request("INFO", body=body, content_type=content_type, extra=self._ua_headers())
        self._send(call, "info", request, now)

    def relay_reinvites_of(self, handle: str, relay: bool = True) -> None:
        """Hand this call's incoming re-INVITEs to the engine as :class:`~callplane.sip.events.ReinviteReceived`
        (``relay=True``) or answer them here from our last SDP (``False``), whatever the UA-wide setting."""
        self.call(handle).relay_reinvites = relay

    def answer_reinvite(
        self, handle: str, sdp: SessionDescription, now: float, *, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """200 OK to the peer's relayed re-INVITE (§14.2) with ``sdp``: our answer to its offer, or our offer when it
        had none (the answer then comes in the ACK as ``MediaUpdated``). Its ``o=`` version is raised above our last
        one if needed; the peer's offer is reported as ``MediaUpdated`` now."""
        extra = checked_headers(headers)
        call = self.call(handle)
        pending = self._relayed_reinvite(call)
        assert call.dialog is not None
        call.dialog.refresh_target(pending.request)
        call.local_sdp = self._next_version(call, sdp)
        pending.answered = True
        self._dialog_response(call, 200, call.local_sdp, now, pending.request, headers=extra)
        if pending.offer is not None:
            self._update_media(call, pending.offer)

    def reject_reinvite(
        self,
        handle: str,
        status: int,
        now: float,
        reason: str | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A 3xx-6xx to the peer's relayed re-INVITE (488 Not Acceptable Here, 491 Request Pending...); the call
        keeps its previous media (§14.2)."""
        extra = _checked_failure(status, headers)
        call = self.call(handle)
        pending = self._relayed_reinvite(call)
        call.reinvite = None
        self._send_failure(call, pending.request, status, reason, extra, now)

    def _send_failure(
        self,
        call: Call,
        request: Request,
        status: int,
        reason: str | None,
        headers: tuple[tuple[str, str], ...],
        now: float,
    ) -> None:
        response = request.create_response(status, reason, to_tag=call.local_tag)
        for name, value in headers:
            response.headers.add(name, value)
        self.tl.send_response(response, now)

    def _relayed_reinvite(self, call: Call) -> PendingReinvite:
        pending = call.reinvite
        if pending is None or pending.outgoing or pending.answered:
            raise CallStateError(f"call {call.handle}: no re-INVITE from the peer is waiting for an answer")
        return pending

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
                first = message.headers.first_values()
                if "contact" in first:
                    _ = message.contacts
                for name in ("record-route", "route"):
                    if name in first:
                        for value in message.headers.get_all(name):
                            Address.parse(value)
            except SipParseError as exc:
                self._malformed(ev, exc, now)
                return
        try:
            self._dispatch(ev, now)
        except Exception as exc:  # a bug: end the call it hit (the unit of work), never the receive path
            self._fault(ev, message, exc, now)

    def _dispatch(self, ev: TxEvent, now: float) -> None:
        if isinstance(ev, ResponseReceived):
            self._on_response(ev.response, ev.key, now)
        elif isinstance(ev, RequestReceived):
            self._on_request(ev.request, ev.source, ev.key, now)
        elif isinstance(ev, AckReceived):
            self._on_ack(ev.request, now)
        elif isinstance(ev, CancelReceived):
            self._on_cancel(ev, now)
        elif isinstance(ev, StrayResponse):
            self._on_stray(ev.response, now)
        elif isinstance(ev, TransactionTimeout):
            self._on_timeout(ev.key, now)
        elif isinstance(ev, AckTimeout):
            self._on_ack_timeout(ev.call_id, ev.cseq, now)
        elif isinstance(ev, TransportError):
            self._on_timeout(ev.key, now, 503, "Service Unavailable")

    def _fault(
        self,
        ev: TxEvent | None,
        message: Request | Response | None,
        exc: Exception,
        now: float,
        handle: str | None = None,
    ) -> None:
        """An internal error while handling ``ev``: counted in :attr:`faults`, logged on one line, and the call it
        belongs to is hung up (best effort) and reported ended with 500, so neither side is left waiting."""
        self.faults += 1
        logger.error("internal error on %s: %r", type(ev or message).__name__ if ev or message else "timer", exc)
        logger.debug("traceback", exc_info=True)
        ctx = self._client.get(ev.key) if isinstance(ev, TransactionTimeout | TransportError) else None
        if ctx is not None:
            handle = ctx.handle
        call = self._calls.get(handle) if handle is not None else None
        if call is None and message is not None:
            try:
                call = self._call_of(message)
            except Exception:  # the message itself may be what broke
                call = None
        if call is None:
            return
        try:
            if call.state in ("answered", "confirmed") and call.dialog is not None:
                self._send_in_dialog(call, "BYE", now)  # not bye(): an unACKed 2xx would only defer it
            else:
                self.hangup(call.handle, now, 500)
        except Exception:  # the call's state is what broke: just drop it
            logger.debug("hang-up after internal error failed", exc_info=True)
        if call.role == "uac" and call.dialog is None:
            event: Event = CallFailed(call.handle, 500, "Internal Error")
        else:
            event = CallEnded(call.handle, "local", 500, "Internal Error")
        call.state = "ended"
        self._end(call, event)

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


def _checked_failure(
    status: int, headers: Sequence[tuple[str, str]], *, allow_contact: bool = False
) -> tuple[tuple[str, str], ...]:
    """Check a 3xx-6xx final response's status and extra headers before any state changes."""
    if not 300 <= status < 700:
        raise ValueError(f"a final failure response needs a 3xx-6xx status, not {status}")
    return checked_headers(headers, allow_contact=allow_contact)
