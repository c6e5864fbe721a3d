"""The UAC core (RFC 3261 §8.1, §9.1, §12.1.2, §13.2, §14.1, §22.2): responses to the requests we sent.

Provisional responses make early dialogs and release a remembered CANCEL; a 2xx is ACKed end to end (and ACKed again
for every retransmission, also after the transaction ended); 401/407 are answered once per realm; 3xx-6xx and
timeouts become :class:`~callplane.sip.events.CallFailed`; re-INVITE and BYE outcomes update or end the call.
"""

from __future__ import annotations

from callplane.sip.calls import Call, PendingReinvite
from callplane.sip.dialog import Dialog
from callplane.sip.events import CallAnswered, CallEnded, CallFailed, CallProgress, ReinviteFailed
from callplane.sip.message import Headers, Request, Response
from callplane.sip.sdp import SessionDescription, refuse_offer
from callplane.sip.transaction_events import TransactionKey
from callplane.sip.uacore import ClientTx, UaCore

__all__ = ["GLARE_RETRIES", "UNUSABLE_ANSWER", "UNUSABLE_OFFER", "UacCore"]

AUTH_HEADERS = ("authorization", "proxy-authorization")
#: How many times a re-INVITE answered 491 is tried again before ReinviteFailed(491) reaches the engine.
GLARE_RETRIES = 3

#: Reason of the CallFailed (488) / CallEnded (488) reported when the peer's SDP answer cannot be used.
UNUSABLE_ANSWER = "Unusable SDP answer"
#: Reason of the CallFailed (488) reported when the offer in the 2xx to our offerless INVITE cannot be used.
UNUSABLE_OFFER = "Unusable SDP offer"


class UacCore(UaCore):
    """Handlers for responses and timeouts of our client transactions."""

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
        self, call: Call, ctx: ClientTx, key: TransactionKey, response: Response, now: float
    ) -> None:
        status = response.status
        if status < 200:
            if call.state in ("calling", "proceeding", "cancelling"):
                call.apply("provisional")
            tag = response.to.tag
            if status > 100 and tag is not None and tag not in call.early_tags:
                call.early_tags.add(tag)  # a new early dialog (a fork, §12.1.2)
                if call.dialog is None:
                    call.dialog = Dialog.from_response(call.invite, response)
            if status > 100 and call.state != "cancelling":
                early = self._sdp_of(response)
                media = self._describe(early)
                if media is not None:
                    call.remote_sdp = early
                self._emit(CallProgress(call.handle, status, response.reason, media))
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
                call.auth_headers = tuple((n, v) for n, v in request.headers if n.lower() in AUTH_HEADERS)
                new_key = self.tl.send_request(request, call.peer, now)
                call.invite_key = new_key
                self._track(new_key, ClientTx("invite", call.handle, request, call.peer, ctx.realms), call)
                return
        was = call.state
        call.apply("failure")
        if was == "cancelling":
            self._unschedule("cancel", call.handle)
        headers = tuple(
            (n, v)
            for n, v in response.headers
            if (lower := n.lower()) in ("contact", "reason", "retry-after") or lower.startswith("x-")
        )
        self._end(call, CallFailed(call.handle, status, response.reason, headers))

    def _on_invite_2xx(self, call: Call, ctx: ClientTx, response: Response, now: float) -> None:
        tag = response.to.tag
        dialog = call.dialog
        late = call.local_sdp is None  # we sent no offer: the 2xx carries one and our answer goes in the ACK
        if call.answer_due and dialog is not None and tag == dialog.id.remote_tag:
            return  # a retransmitted 2xx while the engine prepares its answer: the ACK goes out with it
        if ctx.ack is not None and dialog is not None and tag == dialog.id.remote_tag:
            self.tl.send_stateless(ctx.ack, ctx.peer)  # a retransmitted 2xx (§13.2.2.4)
            return
        if ctx.ack is not None or call.answer_due or tag is None:
            # A 2xx from another fork after we settled on one: ACK it and hang that dialog up (§13.2.2.4).
            if tag is not None:
                other = Dialog.from_response(call.invite, response)
                self._ack_and_bye(other, call, now, self._refusal(self._sdp_of(response)) if late else None)
            return
        if dialog is None or dialog.id.remote_tag != tag:
            dialog = call.dialog = Dialog.from_response(call.invite, response)
        else:
            dialog.confirm(response)
        self._unschedule("ring", call.handle)
        was = call.state
        # The answer (or, late, the offer) is in the 2xx; a 2xx without a body keeps the early media of a 183
        # (unreliable provisionals cannot carry the answer, but gateways rely on it).
        if late:
            remote = self._sdp_of(response)
        else:
            remote = self._sdp_of(response) if response.body else call.remote_sdp
        media = self._describe(remote)
        cancelled = was == "calling" and call.cancel_pending or was == "cancelling"
        if cancelled or media is None:
            # The engine cancelled and the 2xx crossed it (§9.1), or the SDP cannot be used: the dialog exists, so
            # it is ACKed (with a refusing answer for an offer, §13.2.2.4) and ended at once with a BYE.
            self._send_2xx_ack(call, ctx, self._refusal(remote) if late else None)
            call.apply("success" if was == "cancelling" else "bye_sent")
            self._unschedule("cancel", call.handle)
            self._send_in_dialog(call, "BYE", now)
            if cancelled:
                self._end(call, CallFailed(call.handle, 487, "Request Terminated"))
            else:
                self._end(call, CallFailed(call.handle, 488, UNUSABLE_OFFER if late else UNUSABLE_ANSWER))
            return
        call.apply("success")
        call.remote_sdp = remote
        if late:
            call.answer_due = True  # UserAgent.ack() sends the ACK with the engine's answer
        else:
            self._send_2xx_ack(call, ctx, None)
        headers = tuple((n, v) for n, v in response.headers if n.lower().startswith("x-"))
        self._emit(CallAnswered(call.handle, media, str(remote) if remote else None, headers, needs_answer=late))

    def _send_2xx_ack(self, call: Call, ctx: ClientTx, sdp: SessionDescription | None) -> None:
        """The ACK for the INVITE's 2xx (§13.2.2.4): the INVITE's CSeq and credentials, our answer if late offer.
        Kept in ``ctx`` and re-sent for every retransmission of the 2xx."""
        assert call.dialog is not None
        ack = call.dialog.create_request(
            "ACK",
            cseq=call.invite.cseq.seq,
            extra=call.auth_headers,
            body=bytes(sdp) if sdp is not None else b"",
            content_type="application/sdp" if sdp is not None else None,
        )
        peer = self._destination(ack)
        self.tl.send_stateless(ack, peer)
        ctx.ack, ctx.peer = ack, peer

    def _refusal(self, offer: SessionDescription | None) -> SessionDescription | None:
        """The answer refusing every stream of ``offer`` (None when there is no parsable offer to answer)."""
        if offer is None:
            return None
        host = self.local.get(self.transport, ("127.0.0.1", 0))[0].strip("[]")
        return refuse_offer(offer, host, session_id=str(self.ids.u32()))

    def _answer_late_offer(self, call: Call, sdp: SessionDescription | None) -> None:
        """Send the ACK owed to a late-offer 2xx with ``sdp`` (None: refuse every offered stream)."""
        ctx = self._client.get(call.invite_key)
        call.answer_due = False
        if ctx is None:
            return
        if sdp is None:
            sdp = self._refusal(call.remote_sdp)
        else:
            call.local_sdp = sdp
        self._send_2xx_ack(call, ctx, sdp)

    def _ack_and_bye(self, dialog: Dialog, call: Call, now: float, sdp: SessionDescription | None = None) -> None:
        ack = dialog.create_request(
            "ACK",
            cseq=call.invite.cseq.seq,
            extra=call.auth_headers,
            body=bytes(sdp) if sdp is not None else b"",
            content_type="application/sdp" if sdp is not None else None,
        )
        self.tl.send_stateless(ack, self._destination(ack))
        bye = dialog.create_request("BYE", extra=self._ua_headers())
        self.tl.send_request(bye, self._destination(bye), now)

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
        self._track(key, ClientTx("cancel", call.handle, cancel, call.peer), call)
        # §9.1: without a final response within 64*T1 the INVITE is considered cancelled.
        self._schedule("cancel", call.handle, now + self.tl.timers.timeout)

    def _on_cancel_timeout(self, handle: str, now: float) -> None:
        call = self._calls.get(handle)
        if call is not None and call.state == "cancelling":
            call.apply("failure")
            self._end(call, CallFailed(handle, 408, "Request Timeout"))

    def _on_reinvite_response(self, call: Call, ctx: ClientTx, response: Response, now: float) -> None:
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
            # The ACK repeats the credentials of the re-INVITE it acknowledges (§13.2.2.4, §22.1).
            auth = tuple((n, v) for n, v in ctx.request.headers if n.lower() in AUTH_HEADERS)
            ack = dialog.create_request("ACK", cseq=ctx.request.cseq.seq, extra=auth)
            ctx.ack, ctx.peer = ack, self._destination(ack)
            self.tl.send_stateless(ack, ctx.peer)
            dialog.refresh_target(response)
            if pending is not None and pending.outgoing:
                call.reinvite = None
                remote = self._sdp_of(response)
                if pending.offer is not None and self._describe(remote) is None and call.can("bye_sent"):
                    # The peer took our offer but its answer is unusable: no media state to fall back on.
                    call.apply("bye_sent")
                    self._send_in_dialog(call, "BYE", now)
                    self._end(call, CallEnded(call.handle, "local", 488, UNUSABLE_ANSWER))
                    return
                if pending.offer is not None:
                    call.local_sdp = pending.offer
                    section = pending.offer.audio()
                    call.direction = (section.direction if section is not None else None) or "sendrecv"
                self._update_media(call, remote)
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
        if status == 491 and pending is not None and pending.offer is not None and call.glare_retries < GLARE_RETRIES:
            # Glare (§14.1): try again after a random delay, longer for the side that owns the Call-ID (it
            # generated it: our UAC calls), so the two sides do not collide again.
            call.glare_retries += 1
            call.glare_offer = pending.offer
            self._schedule("reinvite", call.handle, now + self.glare_delay(call.role == "uac"))
            return
        call.glare_retries = 0
        self._emit(ReinviteFailed(call.handle, status, response.reason))
        if status in (408, 481):  # §12.2.1.2: the dialog is gone
            self._terminate(call, now, send_bye=status == 408, status=status, reason=response.reason)

    def glare_delay(self, owner: bool) -> float:
        """§14.1: 2.1-4 s (in 10 ms steps) when we own the dialog's Call-ID, else 0-2 s; randomness from ``ids``."""
        steps = self.ids.u32()
        return (210 + steps % 191) / 100 if owner else (steps % 201) / 100

    def _on_glare_timer(self, handle: str, now: float) -> None:
        call = self._calls.get(handle)
        offer = call.glare_offer if call is not None else None
        if call is None or offer is None:
            return
        if call.state != "confirmed" or call.dialog is None:
            call.glare_offer = None
            return
        if call.reinvite is not None:  # the peer's re-INVITE (the glare winner) is still in progress: wait again
            self._schedule("reinvite", handle, now + self.glare_delay(call.role == "uac"))
            return
        call.glare_offer = None
        self._send_reinvite(call, offer, now)

    def _terminate(self, call: Call, now: float, *, send_bye: bool, status: int, reason: str) -> None:
        if send_bye and call.can("bye_sent"):
            call.apply("bye_sent")
            self._send_in_dialog(call, "BYE", now)
            self._end(call, CallEnded(call.handle, "timeout", status, reason))
        else:
            call.state = "ended"
            self._end(call, CallEnded(call.handle, "remote", status, reason))

    def _on_other_response(self, call: Call, ctx: ClientTx, response: Response, now: float) -> None:
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
        elif ctx.kind != "bye" and status in (408, 481) and call.state == "confirmed":
            self._terminate(call, now, send_bye=status == 408, status=status, reason=response.reason)  # §12.2.1.2

    def _on_stray(self, response: Response, now: float) -> None:
        """A 2xx retransmission after the INVITE transaction ended (§13.2.2.4): ACK it again."""
        if response.status < 200 or response.status >= 300 or response.cseq.method != "INVITE":
            return
        tag = response.to.tag
        call = next((c for c in self.calls_with(response.call_id) if c.invite.from_.tag == response.from_.tag), None)
        if call is None or call.role != "uac" or call.dialog is None or tag is None:
            return
        if tag != call.dialog.id.remote_tag:
            # A late 2xx from another fork: ACK it and end that dialog (§13.2.2.4).
            other = Dialog.from_response(call.invite, response)
            late = self._refusal(self._sdp_of(response)) if call.local_sdp is None else None
            self._ack_and_bye(other, call, now, late)
            return
        for key in reversed(call.keys):
            ctx = self._client.get(key)
            if ctx is not None and ctx.ack is not None and ctx.request.cseq.seq == response.cseq.seq:
                self.tl.send_stateless(ctx.ack, ctx.peer)
                return

    def _on_timeout(self, key: TransactionKey, now: float, status: int = 408, reason: str = "Request Timeout") -> None:
        """Timer B/F (408) or a transport error (503, §17.1.4) on one of our client transactions."""
        ctx = self._client.get(key)
        if key.role == "server" or ctx is None:
            return
        if ctx.kind == "register":
            self.registrations.on_timeout(ctx, status, reason)
            return
        call = self._calls.get(ctx.handle)
        if call is None:
            return
        if ctx.kind == "invite" and call.can("failure"):
            call.apply("failure")
            self._end(call, CallFailed(call.handle, status, reason))
        elif ctx.kind == "reinvite":
            call.reinvite = None
            self._emit(ReinviteFailed(call.handle, status, reason))
            self._terminate(call, now, send_bye=status == 408, status=status, reason=reason)
        elif ctx.kind == "bye" and call.can("bye_done"):
            call.apply("bye_done")
            self._end(call, CallEnded(call.handle, "local", status, reason))
        elif ctx.kind not in ("bye", "cancel") and call.state == "confirmed":  # INFO, OPTIONS...: §12.2.1.2
            self._terminate(call, now, send_bye=True, status=status, reason=reason)
