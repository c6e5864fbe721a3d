"""The sans-IO media core: every leg, bridge and conference of one engine, advanced by one tick.

``tick(now, n)`` runs the three phases described in :mod:`callplane.media.leg` over all legs and returns the
datagrams to send. The asyncio adapter (:mod:`callplane.media.aio`) owns the sockets and the ticker and does
nothing but move bytes between them and this object.

Fault boundaries are per leg (style.md: one unit of work). An exception in a leg's phase (its sinks in ``pull``,
its source or a wrong-length frame in ``produce``, its RTCP) takes that leg out of the tick at once: it is
removed (unbridged, out of its conference, source stopped), parked in ``failed`` for the adapter to close its
sockets, and reported with :class:`LegFailed`. A bridge or conference whose mixing raises cannot say whose fault
it was, so every leg in it fails. The other legs finish the tick as if nothing happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media.bridge import Bridge
from callplane.media.events import LegFailed, MediaEvent
from callplane.media.leg import Addr, RtpLeg
from callplane.media.mixer import Conference
from callplane.media.sources import Source

__all__ = ["MediaCore", "Outgoing"]

Outgoing = tuple[str, bytes, Addr]  # (leg id, datagram, destination)
log = logging.getLogger(__name__)


class MediaCore:
    def __init__(self, ids: IdSource) -> None:
        self.ids = ids
        self.legs: dict[str, RtpLeg] = {}
        self.bridges: dict[str, Bridge] = {}  # keyed by both leg ids
        self.conferences: dict[str, Conference] = {}
        self._conference_of: dict[str, str] = {}
        self.events: list[MediaEvent] = []
        self.failed: dict[str, RtpLeg] = {}  # legs taken out by a fault, until the adapter closes them
        self.faults = 0
        self.relay = True  # bridges relay without decoding where nobody listens (False: always decode)

    # -- legs ---------------------------------------------------------------------------------
    def add_leg(self, leg: RtpLeg) -> RtpLeg:
        if leg.leg_id in self.legs:
            raise MediaError(f"leg {leg.leg_id} exists")
        self.legs[leg.leg_id] = leg
        return leg

    def remove_leg(self, leg_id: str) -> RtpLeg | None:
        self.unbridge(leg_id)
        conf = self._conference_of.get(leg_id)
        if conf is not None:
            self.leave(conf, leg_id)
        leg = self.legs.pop(leg_id, None)
        if leg is not None and leg.source is not None:
            leg.source.stop()
        return leg

    def leg(self, leg_id: str) -> RtpLeg:
        try:
            return self.legs[leg_id]
        except KeyError:
            raise MediaError(f"no leg {leg_id}") from None

    # -- bridges and conferences ----------------------------------------------------------------
    def bridge(self, a: str, b: str) -> Bridge:
        for x in (a, b):
            if x in self.bridges or x in self._conference_of:
                raise MediaError(f"leg {x} is already bridged or in a conference")
        br = Bridge(self.leg(a), self.leg(b), relay=self.relay)
        self.bridges[a] = self.bridges[b] = br
        return br

    def unbridge(self, leg_id: str) -> None:
        br = self.bridges.pop(leg_id, None)
        if br is None:
            return
        self.bridges.pop(br.b.leg_id if br.a.leg_id == leg_id else br.a.leg_id, None)
        br.close()

    def conference(self, name: str, music: Callable[[], Source] | None = None) -> Conference:
        conf = self.conferences.get(name)
        if conf is None:
            conf = self.conferences[name] = Conference(name, music=music)
        return conf

    def conference_of(self, leg_id: str) -> str | None:
        return self._conference_of.get(leg_id)

    def join(self, name: str, leg_id: str, *, muted: bool = False, beep: bool = True) -> Conference:
        if leg_id in self.bridges or leg_id in self._conference_of:
            raise MediaError(f"leg {leg_id} is already bridged or in a conference")
        conf = self.conference(name)
        conf.join(self.leg(leg_id), muted=muted, beep=beep)
        self._conference_of[leg_id] = name
        return conf

    def leave(self, name: str, leg_id: str, *, beep: bool = True) -> None:
        conf = self.conferences.get(name)
        if conf is None or self._conference_of.get(leg_id) != name:
            return
        del self._conference_of[leg_id]
        conf.leave(self.legs[leg_id], beep=beep)
        if not len(conf):
            del self.conferences[name]

    # -- faults ---------------------------------------------------------------------------------
    def fail(self, leg: RtpLeg, exc: BaseException) -> None:
        """Take ``leg`` out after a fault in its own work (see the module docstring); idempotent."""
        if self.legs.get(leg.leg_id) is not leg:
            return
        self.faults += 1
        reason = f"{type(exc).__name__}: {exc}"
        log.error("media leg %s failed and is closed: %s", leg.leg_id, reason, exc_info=exc)
        try:
            self.remove_leg(leg.leg_id)
        except Exception:  # stopping its source or music raised as well: the leg goes anyway
            log.exception("cleaning up failed leg %s", leg.leg_id)
            self.legs.pop(leg.leg_id, None)
            self.bridges = {k: br for k, br in self.bridges.items() if leg not in (br.a, br.b)}
            self._conference_of.pop(leg.leg_id, None)
        self.failed[leg.leg_id] = leg
        self.events.extend(leg.events)
        leg.events.clear()
        self.events.append(LegFailed(leg.leg_id, reason))

    # -- the tick -------------------------------------------------------------------------------
    def tick(self, now: float, n: int) -> list[Outgoing]:
        """Advance every leg by one 20 ms frame; returns the RTP and RTCP datagrams to send."""
        faults = self.faults
        legs = list(self.legs.values())
        for leg in legs:
            try:
                leg.pull(now)
            except Exception as exc:
                self.fail(leg, exc)
        seen: set[int] = set()
        for br in list(self.bridges.values()):
            if id(br) not in seen:
                seen.add(id(br))
                try:
                    br.mix(now)
                except Exception as exc:
                    self.fail(br.a, exc)
                    self.fail(br.b, exc)
        for conf in list(self.conferences.values()):
            try:
                conf.mix(now)
            except Exception as exc:
                for p in list(conf.participants.values()):
                    self.fail(p.leg, exc)
        if self.faults != faults:
            legs = [leg for leg in legs if self.legs.get(leg.leg_id) is leg]
        out: list[Outgoing] = []
        append = out.append
        for leg in legs:
            try:
                pkt = leg.produce(now, n)
                if pkt is not None:
                    append((leg.leg_id, pkt, leg.remote))  # type: ignore[arg-type]
                if now >= leg.next_rtcp:
                    rtcp = leg.rtcp_due(now)
                    if rtcp is not None:
                        append((leg.leg_id, rtcp, leg.remote_rtcp))  # type: ignore[arg-type]
            except Exception as exc:
                self.fail(leg, exc)
                continue
            if leg.events:
                self.events.extend(leg.events)
                leg.events.clear()
        return out

    def drain_events(self) -> list[MediaEvent]:
        ev, self.events = self.events, []
        return ev
