"""The sans-IO media core: every leg, bridge and conference of one engine, advanced by one tick.

``tick(now, n)`` runs the three phases described in :mod:`callplane.media.leg` over all legs and returns the
datagrams to send. The asyncio adapter (:mod:`callplane.media.aio`) owns the sockets and the ticker and does
nothing but move bytes between them and this object.
"""

from __future__ import annotations

from collections.abc import Callable

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media.bridge import Bridge
from callplane.media.events import MediaEvent
from callplane.media.leg import Addr, RtpLeg
from callplane.media.mixer import Conference
from callplane.media.sources import Source

__all__ = ["MediaCore", "Outgoing"]

Outgoing = tuple[str, bytes, Addr]  # (leg id, datagram, destination)


class MediaCore:
    def __init__(self, ids: IdSource) -> None:
        self.ids = ids
        self.legs: dict[str, RtpLeg] = {}
        self.bridges: dict[str, Bridge] = {}  # keyed by both leg ids
        self.conferences: dict[str, Conference] = {}
        self._conference_of: dict[str, str] = {}
        self.events: list[MediaEvent] = []

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
        br = Bridge(self.leg(a), self.leg(b))
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

    # -- the tick -------------------------------------------------------------------------------
    def tick(self, now: float, n: int) -> list[Outgoing]:
        """Advance every leg by one 20 ms frame; returns the RTP and RTCP datagrams to send."""
        legs = list(self.legs.values())
        for leg in legs:
            leg.pull(now)
        seen: set[int] = set()
        for br in self.bridges.values():
            if id(br) not in seen:
                seen.add(id(br))
                br.mix(now)
        for conf in self.conferences.values():
            conf.mix(now)
        out: list[Outgoing] = []
        append = out.append
        for leg in legs:
            pkt = leg.produce(now, n)
            if pkt is not None:
                append((leg.leg_id, pkt, leg.remote))  # type: ignore[arg-type]
            if now >= leg.next_rtcp:
                rtcp = leg.rtcp_due(now)
                if rtcp is not None:
                    append((leg.leg_id, rtcp, leg.remote_rtcp))  # type: ignore[arg-type]
            if leg.events:
                self.events.extend(leg.events)
                leg.events.clear()
        return out

    def drain_events(self) -> list[MediaEvent]:
        ev, self.events = self.events, []
        return ev
