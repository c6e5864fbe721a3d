"""The UAS core (RFC 3261 §8.2, §12.1.1, §13.3, §14.2, §15): requests we receive, in and outside dialogs.

Checks in §8.2 order (method 501/405 with Allow, Max-Forwards 483, Require 420), then new INVITEs become
:class:`~callplane.sip.events.IncomingCall`, CANCEL gets 200 + 487, the ACK for our 2xx confirms the call, an unACKed
2xx ends it with a BYE, and in-dialog BYE/INFO/OPTIONS/re-INVITE are answered here.
"""

from __future__ import annotations

from collections.abc import Sequence

from callplane.sip.calls import Call, PendingReinvite
from callplane.sip.dialog import Dialog, DialogEvent
from callplane.sip.events import (
    CallCancelled,
    CallConfirmed,
    CallEnded,
    DtmfReceived,
    IncomingCall,
    RegisterReceived,
    ReinviteCancelled,
    ReinviteReceived,
)
from callplane.sip.headers import TOKEN_CHARS
from callplane.sip.message import Request, canonical_name
from callplane.sip.sdp import (
    MediaDescription,
    NegotiationError,
    SdpParseError,
    SessionDescription,
    answer_offer,
    describe,
)
from callplane.sip.transaction_events import CancelReceived, Peer, TransactionKey
from callplane.sip.uacore import ALLOWED, FORWARDED_HEADERS, KNOWN_METHODS, UaCore

__all__ = ["RESERVED_HEADERS", "UasCore", "checked_headers"]

#: Headers the UA writes itself in its responses; the engine may not add or override them (§8.2.6, §12.1.1).
RESERVED_HEADERS = frozenset(
    {"via", "from", "to", "call-id", "cseq", "content-length", "content-type", "max-forwards", "record-route"}
    | {"route", "contact"}
)


def checked_headers(headers: Sequence[tuple[str, str]], *, allow_contact: bool = False) -> tuple[tuple[str, str], ...]:
    """The engine's extra headers for a response, checked before any state changes: a name must be a token and not
    one the UA writes itself (Contact is allowed in a 3xx-6xx: a redirect's targets, §21.3), a value must be one
    line. Raises :class:`ValueError` naming the header (a caller bug, or hostile input the engine passed on)."""
    out = []
    for name, value in headers:
        key = canonical_name(name)
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ValueError(f"not a header name: {name!r}")
        if key in RESERVED_HEADERS and not (allow_contact and key == "contact"):
            raise ValueError(f"header {name} is written by the UA")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name}: the value must be one line")
        out.append((name, value))
    return tuple(out)


#: How many ended INVITEs keep their To tag for a late CANCEL (a CANCEL comes within 64*T1 of its INVITE).
FINAL_TAGS_KEPT = 4096


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
        cache = request.headers._cache  # parse_message stored Max-Forwards
        if (cache["max-forwards"] if "max-forwards" in cache else request.max_forwards) == 0:
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
        media: MediaDescription | None = None
        if request.body:
            ctype = (request.content_type or "").split(";")[0].strip().lower()
            if ctype != "application/sdp":
                self._reply(request, 415, now, headers=(("Accept", "application/sdp"),))
                return
            try:
                offer = SessionDescription.parse(request.body)
                media = describe(offer, self.supported)
            except (SdpParseError, NegotiationError):
                self._reply(request, 488, now)
                return
        tag = self.ids.tag()
        handle = self.new_handle(request.call_id, tag)
        call = Call(handle, "uas", "received", request, key, source, local_tag=tag, remote_sdp=offer)
        self._add_call(call)
        self._by_server_key[key] = handle
        from_ = request.from_
        self._events.append(
            IncomingCall(
                call=handle,
                request_uri=str(request.uri),
                from_uri=str(from_.uri),
                from_display=from_.display_name,
                to_uri=str(request.to.uri),
                media=media,
                sdp=str(offer) if offer is not None else None,
                headers=_forwarded(request),
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
            relayed = self._calls.get(ev.request.call_id)
            pending = relayed.reinvite if relayed is not None else None
            if relayed is not None and pending is not None and not pending.outgoing and pending.key == ev.invite_key:
                # CANCEL of a re-INVITE the engine has not answered yet (§9.2): 200, 487, the call goes on.
                self._reply(ev.request, 200, now, to_tag=relayed.local_tag)
                if self._end_pending_reinvite(relayed, now):
                    self._emit(ReinviteCancelled(relayed.handle))
                return
            if ev.invite_key is not None:
                # The INVITE's transaction is still there, but our final response already went out (reject, or
                # the caller's earlier hang-up): the CANCEL matches it and has no effect (§9.2).
                self._reply(ev.request, 200, now, to_tag=self._final_tags.get(ev.invite_key))
                return
            self._reply(ev.request, 481, now)
            return
        self._reply(ev.request, 200, now, to_tag=call.local_tag)
        if call.can("cancelled"):  # otherwise our final response already went out: CANCEL has no effect (§9.2)
            self._caller_gave_up(call, "CANCEL", now)

    def _caller_gave_up(self, call: Call, method: str, now: float) -> None:
        """The caller ended the call before our answer (CANCEL, or BYE on the early dialog): 487 to the INVITE ends
        its server transaction (§9.2, §15.1.2), and the engine hears it once."""
        call.apply("cancelled")
        if call.dialog is not None:
            call.dialog.apply(DialogEvent.TERMINATE)
        self.tl.send_response(call.invite.create_response(487, to_tag=call.local_tag), now)
        self._remember_final(call)
        self._end(call, CallCancelled(call.handle, method))

    def _remember_final(self, call: Call) -> None:
        """Keep the To tag of an INVITE we ended, for the 200 to a CANCEL that arrives after it (§9.2: the same
        tag). Bounded: the oldest entries go first; an unknown key only costs the tag (a fresh one is used)."""
        tags = self._final_tags
        tags[call.invite_key] = call.local_tag
        while len(tags) > FINAL_TAGS_KEPT:
            del tags[next(iter(tags))]

    def _on_ack(self, request: Request, now: float) -> None:
        from_tag = request.from_.tag
        call = self.find_dialog(request.call_id, request.to.tag, from_tag)
        if call is None or call.dialog is None or from_tag != call.dialog.id.remote_tag:
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
            self._events.append(CallConfirmed(call.handle, media))
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
        to_tag, from_tag = request.to.tag, request.from_.tag
        call = self.find_dialog(request.call_id, to_tag, from_tag)
        dialog = call.dialog if call is not None else None
        if call is None or dialog is None or to_tag != dialog.id.local_tag or from_tag != dialog.id.remote_tag:
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
            self._end_pending_reinvite(call, now)  # §15.1.2: pending requests are still answered, 487
            if call.role == "uas" and call.can("cancelled"):  # BYE on our early dialog: the caller hung up
                self._caller_gave_up(call, "BYE", now)
            elif call.can("bye_received"):
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

    def _end_pending_reinvite(self, call: Call, now: float) -> bool:
        """Answer 487 to the peer's re-INVITE that the engine still holds (relay), if any. True if there was one."""
        pending = call.reinvite
        if pending is None or pending.outgoing or pending.answered:
            return False
        call.reinvite = None
        self.tl.send_response(pending.request.create_response(487, to_tag=call.local_tag), now)
        return True

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
        relay = call.relay_reinvites if call.relay_reinvites is not None else self.relay_reinvites
        if relay:  # the engine answers (answer_reinvite / reject_reinvite); the peer has our 100 Trying meanwhile
            call.reinvite = PendingReinvite(False, key, request, offer)
            sdp = str(offer) if offer is not None else None
            self._emit(ReinviteReceived(call.handle, self._describe(offer), sdp, _forwarded(request)))
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


def _forwarded(request: Request) -> tuple[tuple[str, str], ...]:
    """The headers a request hands to the engine besides the typed fields (see :class:`IncomingCall`)."""
    # The lines' canonical keys are their lower-cased names, but for a compact form (one letter, never forwarded).
    # Most lines are headers the UA writes itself (Via, From, To...): never forwarded, they are passed over first.
    return tuple(
        [
            (name, value)
            for key, name, value in request.headers._lines
            if key not in RESERVED_HEADERS and (key.startswith("x-") or (key in FORWARDED_HEADERS and len(name) > 1))
        ]
    )


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
