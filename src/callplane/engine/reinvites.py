"""Re-INVITEs across a bridge: one side's offer (hold, resume, a new address) is relayed to the other side, and
the other side's answer comes back as ours (RFC 3261 §14, RFC 3264 §8.4).

While :class:`ReinviteRelay` runs, the UA hands both calls' incoming re-INVITEs to the engine
(``ReinviteReceived``) instead of answering them itself. For an offer from side A, we re-offer our own SDP to side
B with A's direction (``sendonly`` from A: we only send to B what A sends); B's answer (``MediaUpdated``) gives the
direction of our answer to A (``recvonly`` from B: we have nothing to send A). The legs follow the SDP as usual
(:mod:`.media_session`). A re-INVITE that cannot be relayed is still answered: 491 when B is in the middle of an
offer of its own, 488 when nothing in it can be used, B's failure status when B refuses ours, 487 when the bridge
ends first. An offerless re-INVITE is answered here with our offer.
"""

from __future__ import annotations

import contextlib
import logging

from callplane.core.errors import CallplaneError
from callplane.engine.media_session import MediaCalls
from callplane.sip import events as sip
from callplane.sip.sdp import Direction

__all__ = ["ReinviteRelay", "answer_here"]

log = logging.getLogger("callplane.engine.reinvites")

_MIRROR: dict[Direction, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class ReinviteRelay:
    """Relays the re-INVITEs of the calls ``a`` and ``b`` (UA handles) to each other until :meth:`stop`."""

    def __init__(self, calls: MediaCalls, a: str, b: str) -> None:
        self.calls = calls
        self.a, self.b = a, b
        self._waiting: dict[str, tuple[str, str]] = {}  # handle re-INVITEd -> (handle awaiting its answer, offer)

    def start(self) -> None:
        for handle in (self.a, self.b):
            self.calls.relay_reinvites(handle, True)

    def stop(self) -> None:
        """Back to answering re-INVITEs in the UA; an offer still waiting for the other side is refused (487)."""
        for origin, _ in self._waiting.values():
            with contextlib.suppress(CallplaneError):
                self.calls.reject_reinvite(origin, 487)
        self._waiting.clear()
        for handle in (self.a, self.b):
            self.calls.relay_reinvites(handle, False)

    def on_event(self, handle: str, event: object) -> None:
        """One event of either call (others are ignored)."""
        if isinstance(event, sip.ReinviteReceived):
            self._offered(handle, event)
        elif isinstance(event, sip.MediaUpdated | sip.ReinviteFailed) and handle in self._waiting:
            origin, offer = self._waiting.pop(handle)
            try:
                if isinstance(event, sip.MediaUpdated):
                    # What the other side answered is what we answer: we only pass its audio on.
                    self.calls.answer_reinvite(origin, offer, event.media.direction)
                else:
                    self.calls.reject_reinvite(origin, event.status if 400 <= event.status < 700 else 500)
            except (CallplaneError, ValueError) as e:
                log.warning("[%s] answering a relayed re-INVITE failed: %s", origin, e)
                with contextlib.suppress(CallplaneError):
                    self.calls.reject_reinvite(origin, 488)  # never leave the peer's offer unanswered

    def _offered(self, handle: str, event: sip.ReinviteReceived) -> None:
        other = self.b if handle == self.a else self.a
        try:
            if event.sdp is None or event.media is None:
                answer_here(self.calls, handle, event)
                return
            try:
                self.calls.hold(other, event.media.direction)
            except CallplaneError:
                self.calls.reject_reinvite(handle, 491)  # the other side is in the middle of an offer itself
                return
            self._waiting[other] = (handle, event.sdp)
        except (CallplaneError, ValueError) as e:
            log.warning("[%s] relaying a re-INVITE failed: %s", handle, e)
            with contextlib.suppress(CallplaneError):
                self.calls.reject_reinvite(handle, 488)


def answer_here(calls: MediaCalls, handle: str, event: sip.ReinviteReceived) -> None:
    """Answer a handed-over re-INVITE ourselves: our offer for an offerless one, 488 for an unusable one, else the
    mirror of its direction."""
    if event.sdp is None:
        calls.offer_reinvite(handle)
    elif event.media is None:
        calls.reject_reinvite(handle, 488)
    else:
        calls.answer_reinvite(handle, event.sdp, _MIRROR[event.media.direction])
