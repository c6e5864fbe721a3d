"""The node's one SIP event dispatcher: the endpoint's event slot points here, and the engine's parts subscribe.

Theory of operation
-------------------
:class:`~callplane.sip.aio.SipEndpoint` has one event callback. :meth:`SipEventDispatcher.attach` installs the
dispatcher in it, and every part that needs UA events subscribes instead of claiming the slot:
:class:`~callplane.engine.sip_service.SipService` (REGISTER, and 404 for an INVITE nobody routes),
:class:`~callplane.engine.media_session.MediaCalls` (the media of calls), and the call engine.

* **Order.** Subscribers get an event in ``order`` (lower first), ties in subscription order. The stages:
  :data:`MEDIA` (the leg follows the SDP first, so what later subscribers see is already true), :data:`APP` (the
  default: the engine, the application) and :data:`FALLBACK` (what happens when nobody else acted).
* **Filters.** ``types`` limits a subscription to some event classes; ``call`` to the events of one call handle.
  A per-call subscription ends by itself after that call's last event (:data:`FINAL_EVENTS`).
* **Claims.** A handler that returns ``True`` claims the event. A ``fallback`` subscription gets only events that
  no earlier subscriber claimed: an :class:`~callplane.sip.events.IncomingCall` that the engine did not take is
  answered 404 by the SIP service.
* **Faults.** A handler that raises is one faulty unit of work: the exception is logged (with its traceback the
  first time for that subscriber and exception type, then one line at the 2nd, 4th, 8th... repeat, so a peer that
  keeps triggering a bug cannot flood the log), counted in :attr:`Subscription.faults`, and the event still goes to
  the remaining subscribers. Nothing raises out of :meth:`SipEventDispatcher.dispatch` into the endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callplane.sip.aio import SansIoCore, SipEndpoint
from callplane.sip.events import CallCancelled, CallEnded, CallFailed

__all__ = ["APP", "FALLBACK", "FINAL_EVENTS", "MEDIA", "SipEventDispatcher", "Subscription"]

log = logging.getLogger(__name__)

MEDIA = 10
APP = 50
FALLBACK = 90

#: The last event of a call: per-call subscriptions end after it.
FINAL_EVENTS = (CallEnded, CallFailed, CallCancelled)

Handler = Callable[[Any], object]


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscriber (see the module docstring). ``faults`` counts the exceptions its handler raised."""

    handler: Handler
    name: str
    order: int
    seq: int
    types: tuple[type, ...] | None = None
    call: str | None = None
    fallback: bool = False
    active: bool = True
    faults: int = 0
    _logged: dict[type, int] = field(default_factory=dict)

    def wants(self, event: object) -> bool:
        return self.active and (self.types is None or isinstance(event, self.types))


class SipEventDispatcher:
    """Routes each UA event to its subscribers, in order, with per-subscriber fault isolation."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._by_call: dict[str, list[Subscription]] = {}
        self._seq = 0

    def attach(self, endpoint: SipEndpoint, core: SansIoCore) -> None:
        """Drive ``core`` (the UA) through ``endpoint`` with this dispatcher as its one event handler."""
        endpoint.attach(core, self.dispatch)

    def subscribe(
        self,
        handler: Handler,
        *,
        types: tuple[type, ...] | None = None,
        call: str | None = None,
        order: int = APP,
        fallback: bool = False,
        name: str | None = None,
    ) -> Subscription:
        """Add a subscriber; returns the subscription (pass it to :meth:`unsubscribe`). A per-call subscription
        ends with the call's last event; a call the engine itself rejected has none, so unsubscribe it then."""
        self._seq += 1
        label = name or str(getattr(handler, "__qualname__", repr(handler)))
        sub = Subscription(handler, label, order, self._seq, types, call, fallback)
        target = self._by_call.setdefault(call, []) if call is not None else self._subs
        target.append(sub)
        target.sort(key=_rank)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.active = False
        if sub.call is None:
            self._subs = [s for s in self._subs if s is not sub]
            return
        rest = [s for s in self._by_call.get(sub.call, ()) if s is not sub]
        if rest:
            self._by_call[sub.call] = rest
        else:
            self._by_call.pop(sub.call, None)

    def subscribers(self, event: object) -> list[Subscription]:
        """Who would get ``event``, in order (claims aside)."""
        handle = getattr(event, "call", None)
        per_call = self._by_call.get(handle) if isinstance(handle, str) else None
        subs = sorted([*self._subs, *per_call], key=_rank) if per_call else self._subs
        return [s for s in subs if s.wants(event)]

    def dispatch(self, event: object) -> None:
        """Hand ``event`` to its subscribers (see the module docstring). Never raises."""
        claimed = False
        for sub in self.subscribers(event):
            if sub.fallback and claimed:
                continue
            try:
                result = sub.handler(event)
            except Exception as exc:
                self._fault(sub, event, exc)
                continue
            if result is True:
                claimed = True
        if isinstance(event, FINAL_EVENTS):
            for sub in self._by_call.pop(event.call, ()):
                sub.active = False

    @staticmethod
    def _fault(sub: Subscription, event: object, exc: Exception) -> None:
        sub.faults += 1
        kind = type(exc)
        seen = sub._logged[kind] = sub._logged.get(kind, 0) + 1
        what = f"SIP event subscriber {sub.name} failed on {type(event).__name__}"
        if seen == 1:
            log.error("%s", what, exc_info=exc)
        elif seen & (seen - 1) == 0:  # 2, 4, 8...: one line, without the traceback
            log.error("%s: %r (%d times)", what, exc, seen)


def _rank(sub: Subscription) -> tuple[int, int]:
    return sub.order, sub.seq
