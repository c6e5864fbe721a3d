"""The UAS core (RFC 3261 §8.2, §12.1.1, §13.3, §14.2, §15): requests we receive, in and outside dialogs.

Checks in §8.2 order (method 501/405 with Allow, Max-Forwards 483, Require 420), then new INVITEs become
:class:`~callplane.sip.events.IncomingCall`, CANCEL gets 200 + 487, the ACK for our 2xx confirms the call, an unACKed
2xx ends it with a BYE, and in-dialog BYE/INFO/OPTIONS/re-INVITE are answered here.
"""

from __future__ import annotations

from callplane.sip.calls import Call, PendingReinvite
from callplane.sip.dialog import Dialog, DialogEvent
from callplane.sip.events import CallCancelled, CallConfirmed, CallEnded, DtmfReceived, IncomingCall, RegisterReceived
from callplane.sip.message import Request
from callplane.sip.sdp import NegotiationError, SdpParseError, SessionDescription, answer_offer, describe
from callplane.sip.transaction_events import CancelReceived, Peer, TransactionKey
from callplane.sip.uacore import ALLOWED, FORWARDED_HEADERS, KNOWN_METHODS, UaCore

__all__ = ["UasCore"]


class UasCore(UaCore):
    """Handlers for requests from the peer."""

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
        if self.merged(request):
            self._reply(request, 482, now)  # §8.2.2.2 (a spiral of our own INVITE has our From tag: not merged)
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
        tag = self.ids.tag()
        handle = self.new_handle(request.call_id, tag)
        call = Call(handle, "uas", "received", request, key, source, local_tag=tag, remote_sdp=offer)
        self._add_call(call)
        self._by_server_key[key] = handle
        forwarded = tuple(
            (name, value)
            for name, value in request.headers
            if name.lower().startswith("x-") or name.lower() in FORWARDED_HEADERS
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
        call = self.find_dialog(request.call_id, request.to.tag, request.from_.tag)
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
                call.apply("bye_sent")
                self._send_in_dialog(call, "BYE", now)

    def _on_ack_timeout(self, call_id: str, cseq: int, now: float) -> None:
        """Our 2xx was never ACKed (§13.3.1.4): confirm and immediately end the dialog with a BYE."""
        call = self._call_for_2xx(call_id, cseq)
        if call is None or not call.can("ack_timeout"):
            return
        call.apply("ack_timeout")
        call.reinvite = None
        self._send_in_dialog(call, "BYE", now)
        self._end(call, CallEnded(call.handle, "timeout", 408, "No ACK"))

    def _on_in_dialog(self, request: Request, key: TransactionKey, now: float) -> None:
        call = self.find_dialog(request.call_id, request.to.tag, request.from_.tag)
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
        if request.body and self._describe(offer) is None:  # unparsable, or no usable stream (no c=...)
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
            return signal.upper(), int(duration) if duration.isascii() and duration.isdigit() else None
    elif ctype == "application/dtmf":
        digit = text.strip()
        if len(digit) == 1 and digit in "0123456789*#ABCDabcd":
            return digit.upper(), None
    return None, None
