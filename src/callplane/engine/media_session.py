"""Media for SIP calls: the glue between the UA's offer/answer and the media engine's RTP legs.

Theory of operation
-------------------
sip/ and media/ never import each other (style.md, layer rules); this module is where the negotiated SDP crosses
from one to the other. :class:`MediaCalls` keeps one :class:`MediaCall` per SIP call, mapping the UA's call handle
(the Call-ID) to a media leg, and reacts to the UA's events:

* incoming call (:meth:`MediaCalls.answer`, or :meth:`MediaCalls.progress` first for early media: 183 with the
  same answer the 200 repeats): a leg is created with the codec the offer's first supported format
  names (an offer whose c= is a host name, not an IPv4 address, is refused with 488: names are never resolved);
  the answer (RFC 3264 §6) carries our address and the leg's port, and the remote from the offer is set at once
  (so our audio flows as soon as the 200 leaves; symmetric RTP latches when the peer's arrives). An INVITE without
  an offer gets our offer in the 200 and the remote from the ACK (``CallConfirmed``).
* outgoing call (:meth:`MediaCalls.invite`): the leg exists before the INVITE, whose offer carries its port; the
  remote is set from early media (``CallProgress`` with SDP) and from the answer (``CallAnswered``).
* an answer or re-INVITE whose c= is a host name cannot be used: the call is hung up.
* re-INVITE (``MediaUpdated``, either side's): new address/port/codec are applied, and the leg stops sending while
  the peer does not want to receive (RFC 3264 §8.4: its direction is ``sendonly``/``inactive``, or the legacy
  ``c=0.0.0.0``). Only our sending stops: what the peer sends (its hold music) is still passed to a bridge or
  conference. When *we* hold with ``sendonly`` the peer answers ``recvonly`` and we keep sending (hold music).
* ``CallEnded`` / ``CallFailed`` / ``CallCancelled``: the leg is closed (RTCP BYE, port released).
* digits: RFC 4733 and in-band digits from the leg (``media.events.DigitReceived``) and SIP INFO digits
  (``sip.events.DtmfReceived``) are surfaced as one :class:`CallDigit`.

Wiring: the owner routes events to :meth:`MediaCalls.on_sip_event` and :meth:`MediaCalls.on_media_event`, or calls
:meth:`MediaCalls.attach` to subscribe to the node's SIP event dispatcher (:mod:`.dispatch`) and take the media
engine's events. ``on_event`` then receives every SIP event (after the media side acted on it), every media event
except digits, and :class:`CallDigit`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from callplane.core.errors import MediaError
from callplane.engine.dispatch import MEDIA, SipEventDispatcher, Subscription
from callplane.media import events as media_events
from callplane.media.aio import MediaEngine
from callplane.media.leg import ip_literal
from callplane.sip import events as sip_events
from callplane.sip.aio import SipEndpoint
from callplane.sip.digest import Credentials
from callplane.sip.sdp import (
    Direction,
    MediaDescription,
    NegotiationError,
    SessionDescription,
    answer_offer,
    build_offer,
    describe,
)
from callplane.sip.ua import CallStateError, UserAgent

__all__ = ["CallDigit", "MediaCall", "MediaCalls", "can_send"]

log = logging.getLogger(__name__)

#: Payload types the media engine can encode and decode (RFC 3551 static G.711).
_G711 = {"PCMU": 0, "PCMA": 8}


@dataclass(frozen=True, slots=True)
class CallDigit:
    """A DTMF digit on a call, whatever carried it: ``method`` is ``"rfc4733"``, ``"inband"`` or ``"info"``.
    ``duration_ms`` is None when a SIP INFO gave none."""

    call: str
    digit: str
    duration_ms: int | None
    method: str


@dataclass(slots=True)
class MediaCall:
    """One SIP call's media: the UA handle, its leg and what was negotiated (read it; :class:`MediaCalls` writes)."""

    call: str
    leg_id: str
    port: int
    role: str  # "uas" (we answered) or "uac" (we called)
    local_sdp: SessionDescription
    remote: MediaDescription | None = None
    sending: bool = True  # False while the peer does not want our audio (hold)


def can_send(media: MediaDescription) -> bool:
    """Whether the peer wants to receive our audio (RFC 3264 §6.1, §8.4): its direction lets it receive and its
    address is not the legacy hold address."""
    return media.direction in ("sendrecv", "recvonly") and media.address not in ("0.0.0.0", "::")


class MediaCalls:
    """Media legs for the calls of one UA (see the module docstring).

    ``address`` is what our SDP advertises (default: the media engine's bind address). ``codecs`` are the audio
    codecs we offer and accept, in our order of preference; ``telephone_event_pt`` the RFC 4733 payload type we
    offer (None: no telephone-event in our offers).
    """

    def __init__(
        self,
        ua: UserAgent,
        endpoint: SipEndpoint,
        media: MediaEngine,
        *,
        address: str | None = None,
        codecs: tuple[str, ...] = ("PCMU", "PCMA"),
        telephone_event_pt: int | None = 101,
        on_event: Callable[[object], None] | None = None,
    ) -> None:
        unknown = [c for c in codecs if c.upper() not in _G711]
        if unknown or not codecs:
            raise MediaError(f"the media engine cannot carry {unknown or 'no codec'}")
        self.ua = ua
        self.endpoint = endpoint
        self.media = media
        self.address = address or media.host
        self.codecs = tuple(c.upper() for c in codecs)
        self.telephone_event_pt = telephone_event_pt
        self.on_event = on_event
        self._calls: dict[str, MediaCall] = {}
        self._by_leg: dict[str, str] = {}

    # -- wiring ---------------------------------------------------------------------------------------------
    def attach(self, dispatcher: SipEventDispatcher) -> Subscription:
        """Subscribe :meth:`on_sip_event` to the node's SIP event dispatcher, first in line (:data:`MEDIA`: the leg
        follows the SDP before anyone else reacts), and take the media engine's events."""
        self.media.on_event = self.on_media_event
        return dispatcher.subscribe(self.on_sip_event, order=MEDIA, name="media-calls")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            self.on_event(event)

    # -- lookups --------------------------------------------------------------------------------------------
    def get(self, call: str) -> MediaCall | None:
        return self._calls.get(call)

    def by_leg(self, leg_id: str) -> MediaCall | None:
        handle = self._by_leg.get(leg_id)
        return self._calls.get(handle) if handle is not None else None

    def __len__(self) -> int:
        return len(self._calls)

    def _session_id(self) -> str:
        return str(self.media.ids.u32())

    # -- incoming calls -------------------------------------------------------------------------------------
    def answer(self, incoming: sip_events.IncomingCall) -> MediaCall:
        """Answer ``incoming`` with 200 OK and a media leg (RFC 3264 §6; our offer in the 200 if it had none).

        A leg made for early media (:meth:`progress`) is kept, and the 200 repeats the 183's answer. An offer with
        nothing we can carry is rejected with 488 and :class:`NegotiationError` is raised; when no RTP port is free
        the call is rejected with 503 and the :class:`MediaError` is raised.
        """
        mc = self._calls.get(incoming.call) or self._prepare(incoming)
        return self._respond(mc, lambda: self.ua.answer(incoming.call, mc.local_sdp, self._now()), "answered")

    def progress(self, incoming: sip_events.IncomingCall) -> MediaCall | None:
        """Early media for the ringing ``incoming``: a leg and ``183 Session Progress`` with our answer (RFC 3261
        §13.3.1.1; the later 200 carries the same answer). None when the INVITE had no offer (an answer must then
        wait for the 200's offer and the ACK). Refusals as for :meth:`answer`."""
        if incoming.sdp is None:
            return None
        mc = self._calls.get(incoming.call)
        if mc is not None:
            return mc
        mc = self._prepare(incoming)
        return self._respond(mc, lambda: self.ua.ring(incoming.call, self._now(), mc.local_sdp), "early media")

    def _respond(self, mc: MediaCall, send: Callable[[], None], what: str) -> MediaCall:
        """``send`` the response that carries ``mc``'s description; a failure releases the leg and is raised."""
        try:
            send()
        except Exception:
            self._drop(mc.call, mc.leg_id)
            raise
        self.endpoint.flush()
        log.info("[%s] %s, leg %s on port %d", mc.call, what, mc.leg_id, mc.port)
        return mc

    def _prepare(self, incoming: sip_events.IncomingCall) -> MediaCall:
        """The leg and our description for ``incoming`` (the answer to its offer, or our offer)."""
        handle = incoming.call
        offer = SessionDescription.parse(incoming.sdp) if incoming.sdp is not None else None
        media: MediaDescription | None = None
        if offer is not None:
            # Our own choice among *our* codecs (the UA's ``supported`` may be wider); answer_offer picks the same.
            try:
                media = describe(offer, self.codecs)
                if media.payload_type not in _G711.values():
                    raise NegotiationError(f"{media.codec} on dynamic payload type {media.payload_type}")
                if not _is_ipv4(media.address):
                    # Never looked up: a name would cost a blocking resolution on the event loop (RFC 4566 allows
                    # one in c=; peers send literals in practice).
                    raise NegotiationError(f"c= {media.address!r} is not an IPv4 address")
            except NegotiationError:
                self.ua.reject(handle, 488, self._now())
                self.endpoint.flush()
                raise
        pt = media.payload_type if media is not None else _G711[self.codecs[0]]
        dtmf = media.telephone_event_pt if media is not None else self.telephone_event_pt
        try:
            leg_id, port = self.media.create_leg(payload_type=pt, dtmf_payload_type=dtmf)
        except MediaError:
            # No RTP port left: the call cannot have media here, another node may (RFC 3261 §21.5.4).
            self.ua.reject(handle, 503, self._now())
            self.endpoint.flush()
            raise
        try:
            if offer is not None:
                local = answer_offer(offer, self.address, port, session_id=self._session_id(), supported=self.codecs)
            else:
                local = self._offer(port)
            mc = self._add(MediaCall(handle, leg_id, port, "uas", local))
            if media is not None:
                self._apply_remote(mc, media)
        except Exception:
            self._drop(handle, leg_id)
            raise
        return mc

    # -- outgoing calls -------------------------------------------------------------------------------------
    def invite(
        self,
        target: str,
        from_uri: str,
        *,
        to_uri: str | None = None,
        from_display: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        credentials: Credentials | None = None,
    ) -> MediaCall:
        """Place a call (:meth:`UserAgent.invite`) whose offer carries a new leg's port and our codecs."""
        leg_id, port = self.media.create_leg(
            payload_type=_G711[self.codecs[0]], dtmf_payload_type=self.telephone_event_pt
        )
        offer = self._offer(port)
        try:
            handle = self.ua.invite(
                target,
                from_uri,
                offer,
                self._now(),
                to_uri=to_uri,
                from_display=from_display,
                headers=headers,
                credentials=credentials,
            )
        except Exception:
            self.media.close_leg(leg_id)
            raise
        mc = self._add(MediaCall(handle, leg_id, port, "uac", offer))
        self.endpoint.flush()
        log.info("[%s] calling %s, leg %s on port %d", handle, target, leg_id, port)
        return mc

    def _offer(self, port: int) -> SessionDescription:
        return build_offer(
            self.address,
            port,
            session_id=self._session_id(),
            codecs=self.codecs,
            telephone_event_pt=self.telephone_event_pt,
        )

    # -- actions --------------------------------------------------------------------------------------------
    def send_digits(self, call: str, digits: str) -> None:
        """RFC 4733 digits on the call's leg (``w`` = 0.5 s pause); :class:`~callplane.media.events.DigitsSent`
        follows."""
        self.media.send_digits(self._require(call).leg_id, digits)

    def hold(self, call: str, direction: Direction = "sendonly") -> None:
        """Put the peer on hold with a re-INVITE (RFC 3264 §8.4): ``sendonly`` (we may play music, it answers
        ``recvonly``) or ``inactive`` (no media either way). The leg follows the answer (``MediaUpdated``)."""
        self._require(call)
        self.ua.hold(call, self._now(), direction)
        self.endpoint.flush()

    def resume(self, call: str) -> None:
        """Take the peer off hold (re-INVITE ``sendrecv``)."""
        self._require(call)
        self.ua.resume(call, self._now())
        self.endpoint.flush()

    def relay_reinvites(self, call: str, relay: bool = True) -> None:
        """Hand the peer's re-INVITEs on ``call`` to the engine (``ReinviteReceived``) instead of answering them
        here: a bridged call relays them to the other side (``False``: answered here again)."""
        try:
            self.ua.relay_reinvites_of(call, relay)
        except CallStateError:
            pass  # the call is gone already

    def answer_reinvite(self, call: str, offer: str, direction: Direction) -> None:
        """Answer the peer's relayed re-INVITE ``offer`` (RFC 3264 §8) from the call's leg, with ``direction``:
        what the other side of the bridge answered. The leg follows the offer (``MediaUpdated``)."""
        mc = self._require(call)
        local = answer_offer(
            SessionDescription.parse(offer),
            self.address,
            mc.port,
            session_id=self._session_id(),
            supported=self.codecs,
            direction=direction,
        )
        self.ua.answer_reinvite(call, local, self._now())
        self.endpoint.flush()

    def offer_reinvite(self, call: str) -> None:
        """Answer an offerless re-INVITE from the peer with our offer (its answer comes in the ACK)."""
        mc = self._require(call)
        self.ua.answer_reinvite(call, self._offer(mc.port), self._now())
        self.endpoint.flush()

    def reject_reinvite(self, call: str, status: int) -> None:
        """Refuse the peer's relayed re-INVITE (491, 488...): the call keeps its media."""
        self.ua.reject_reinvite(call, status, self._now())
        self.endpoint.flush()

    def hangup(self, call: str, status: int = 480) -> None:
        """End the call in whatever state (CANCEL, reject or BYE) and close its leg now."""
        mc = self._calls.get(call)
        self.ua.hangup(call, self._now(), status)
        self.endpoint.flush()
        if mc is not None:
            self._drop(call, mc.leg_id)

    def close(self) -> None:
        """Close every leg (the node is stopping); the SIP side is the caller's business."""
        for handle, mc in list(self._calls.items()):
            self._drop(handle, mc.leg_id)

    def _require(self, call: str) -> MediaCall:
        mc = self._calls.get(call)
        if mc is None:
            raise MediaError(f"no media for call {call}")
        return mc

    # -- events ---------------------------------------------------------------------------------------------
    def on_sip_event(self, event: object) -> None:
        """React to one UA event, then hand it on (a SIP INFO digit is handed on as :class:`CallDigit`)."""
        if isinstance(event, sip_events.DtmfReceived):
            if event.call in self._calls:
                self._emit(CallDigit(event.call, event.digit, event.duration, "info"))
                return
        elif isinstance(event, sip_events.CallProgress | sip_events.CallAnswered):
            mc = self._calls.get(event.call)
            if mc is not None and event.media is not None:
                self._follow(mc, event.media)
            elif mc is not None and isinstance(event, sip_events.CallAnswered) and mc.remote is None:
                log.warning("[%s] answered without usable SDP: hanging up", event.call)
                self.hangup(event.call)
        elif isinstance(event, sip_events.CallConfirmed):
            mc = self._calls.get(event.call)
            if mc is not None and event.media is not None:
                self._follow(mc, event.media)
            elif mc is not None and mc.remote is None:
                log.warning("[%s] ACK without an answer to our offer: hanging up", event.call)
                self.hangup(event.call)
        elif isinstance(event, sip_events.MediaUpdated):
            mc = self._calls.get(event.call)
            if mc is not None:
                self._follow(mc, event.media)
        elif isinstance(event, sip_events.CallEnded | sip_events.CallFailed | sip_events.CallCancelled):
            mc = self._calls.get(event.call)
            if mc is not None:
                self._drop(event.call, mc.leg_id)
        self._emit(event)

    def on_media_event(self, event: media_events.MediaEvent) -> None:
        """Hand on one media event; a received digit becomes :class:`CallDigit`."""
        if isinstance(event, media_events.DigitReceived):
            mc = self.by_leg(event.leg_id)
            if mc is not None:
                self._emit(CallDigit(mc.call, event.digit, event.duration_ms, event.method))
                return
        self._emit(event)

    # -- internals ------------------------------------------------------------------------------------------
    def _add(self, mc: MediaCall) -> MediaCall:
        self._calls[mc.call] = mc
        self._by_leg[mc.leg_id] = mc.call
        return mc

    def _drop(self, call: str, leg_id: str) -> None:
        self._calls.pop(call, None)
        self._by_leg.pop(leg_id, None)
        self.media.close_leg(leg_id)
        log.debug("[%s] leg %s closed", call, leg_id)

    def _follow(self, mc: MediaCall, media: MediaDescription) -> None:
        """Apply the peer's media; what the leg cannot carry (a G.711 name on a dynamic payload type) ends the call."""
        try:
            self._apply_remote(mc, media)
        except MediaError as exc:
            log.warning("[%s] cannot use the peer's media (%s): hanging up", mc.call, exc)
            self.hangup(mc.call)

    def _apply_remote(self, mc: MediaCall, media: MediaDescription) -> None:
        """Point the leg at the peer's address and codec, and send only while the peer wants to receive."""
        leg = self.media.leg(mc.leg_id)
        previous = mc.remote
        real = media.address not in ("0.0.0.0", "::")
        if real and (previous is None or (previous.address, previous.port) != (media.address, media.port)):
            self.media.set_remote(mc.leg_id, media.address, media.port, media.payload_type)
        elif media.payload_type != leg.payload_type and leg.remote is not None:
            # Same address: keep the latched source, change only the codec.
            leg.set_remote(leg.remote, media.payload_type)
        # set_remote keeps the old telephone-event type when given None; a peer that dropped it gets no digits.
        leg.dtmf_payload_type = media.telephone_event_pt
        sending = can_send(media)
        if sending != mc.sending:
            log.info("[%s] %s", mc.call, "resumed: sending" if sending else f"held ({media.direction}): not sending")
        leg.sending = sending  # only our direction: what the peer sends (its hold music) is still passed on
        mc.sending = sending
        mc.remote = media if real or previous is None else _keep_address(media, previous)


def _is_ipv4(host: str) -> bool:
    try:
        return ":" not in ip_literal(host)
    except MediaError:
        return False


def _keep_address(media: MediaDescription, previous: MediaDescription) -> MediaDescription:
    """A legacy hold (``c=0.0.0.0``) keeps the address we had, for the resume to compare against."""
    return replace(media, address=previous.address, port=previous.port)
