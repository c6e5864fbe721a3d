"""The sans-IO media core: every leg, bridge and conference of one engine, advanced by one tick.

``tick(now, n)`` runs the three phases described in :mod:`callplane.media.leg` over all legs and returns the
datagrams to send. The asyncio adapter (:mod:`callplane.media.aio`) owns the sockets and the ticker and does
nothing but move bytes between them and this object.

Fault boundaries are per leg (style.md: one unit of work). An exception in a leg's phase (its sinks in ``pull``,
its source or a wrong-length frame in ``produce``, its RTCP) takes that leg out of the tick at once: it is
removed (unbridged, out of its conference, source stopped), parked in ``failed`` for the adapter to close its
sockets, and reported with :class:`LegFailed`. A bridge or conference whose mixing raises cannot say whose fault
it was, so every leg in it fails. The other legs finish the tick as if nothing happened.

Legs off the tick. A bridge whose two directions are both relayed (see :mod:`callplane.media.bridge`) leaves
nothing for the tick to do: its packets go out on arrival, nobody listens, neither leg sends anything of its own.
At the end of a tick such a pair is *parked*: taken off the per-tick list and put on a timer wheel (one slot per
20 ms, one entry per pair) at the earliest time either leg needs the clock again (:meth:`RtpLeg.wake_at`: an RTCP
report, the idle timeout, the silence filler when a source goes quiet). When that slot comes up the time is checked
again (the packets that arrived meanwhile move the last two later) and the pair is either put back in the wheel
or, when the time has come, goes back on the tick for as long as it needs it. Anything else that the tick must see
wakes the pair at once, from the next tick on: a mute, a hold, a sink or recording, digits to send, a peer's hold,
a new remote or codec, an RFC 4733 packet, an event (a latch, a digit), a packet that cannot be relayed, the end
of the bridge. A parked pair thus behaves exactly as if it were ticked (``park = False`` ticks every leg, for
comparison), for a fraction of its cost: one look at the pair every one or two ticks (the time of its silence
fillers moves on with each packet relayed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from callplane.core.errors import MediaError
from callplane.core.ids import IdSource
from callplane.media.bridge import Bridge
from callplane.media.events import LegFailed, MediaEvent
from callplane.media.leg import RELAY_FILL, Addr, RtpLeg
from callplane.media.mixer import Conference
from callplane.media.sources import Source

__all__ = ["MediaCore", "Outgoing"]

Outgoing = tuple[str, bytes, Addr]  # (leg id, datagram, destination)
log = logging.getLogger(__name__)
_SLOTS_PER_S = 50  # the timer wheel of parked legs: one slot per 20 ms tick


class _Pair:
    """A parked pair's entry in the timer wheel. What a change would alter (whether a leg fills a quiet relay, its
    RTCP and idle times) is taken when parked: a change wakes the pair, and while parked the idle times only move
    later, so ``timers`` is never late. The check then reads one attribute of each leg: when each last relayed."""

    __slots__ = ("a", "b", "fill_a", "fill_b", "live", "timers")

    def __init__(self, a: RtpLeg, b: RtpLeg) -> None:
        self.a, self.b = a, b
        self.live = True  # False once the pair is back on the tick (the entry is then skipped)
        self.fill_a = self.fill_b = False
        self.timers = 0.0
        self.refresh()

    def refresh(self) -> None:
        a, b = self.a, self.b
        self.fill_a, self.fill_b = a.fills(), b.fills()
        self.timers = min(a.timers_due(), b.timers_due())

    def due(self) -> float:
        """When the pair needs the tick (earlier than that when ``timers`` is, until :meth:`refresh`)."""
        at = self.timers
        if self.fill_a:
            at = min(at, self.a.relayed_at + RELAY_FILL)
        if self.fill_b:
            at = min(at, self.b.relayed_at + RELAY_FILL)
        return at


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
        self.park = True  # settled relayed pairs leave the tick (False: every leg is ticked, for comparison)
        self._ticking: dict[str, RtpLeg] = {}  # the legs the tick runs: all but the parked ones
        self._parked: dict[str, _Pair] = {}  # leg id -> its pair's entry
        self._wheel: dict[int, list[_Pair]] = {}  # slot -> pairs to check then (entries no longer live are skipped)
        self._slot = -1  # the last slot checked
        self._next_tick: list[_Pair] = []  # pairs to check on the next tick (their slot was checked already)
        self._waking: list[RtpLeg] = []  # parked legs something woke (they append themselves)

    # -- legs ---------------------------------------------------------------------------------
    def add_leg(self, leg: RtpLeg) -> RtpLeg:
        if leg.leg_id in self.legs:
            raise MediaError(f"leg {leg.leg_id} exists")
        self.legs[leg.leg_id] = self._ticking[leg.leg_id] = leg
        leg._waking = self._waking
        return leg

    def remove_leg(self, leg_id: str) -> RtpLeg | None:
        self.unbridge(leg_id)
        conf = self._conference_of.get(leg_id)
        if conf is not None:
            self.leave(conf, leg_id)
        leg = self.legs.pop(leg_id, None)
        self._ticking.pop(leg_id, None)
        self._unpark_entry(leg_id)
        if leg is not None:
            leg.parked = False
            if leg.source is not None:
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
            self._ticking.pop(leg.leg_id, None)
            self._unpark_entry(leg.leg_id)
            self.bridges = {k: br for k, br in self.bridges.items() if leg not in (br.a, br.b)}
            self._conference_of.pop(leg.leg_id, None)
        self.failed[leg.leg_id] = leg
        self.events.extend(leg.events)
        leg.events.clear()
        self.events.append(LegFailed(leg.leg_id, reason))

    # -- legs off the tick (see the module docstring) ---------------------------------------------
    @property
    def parked(self) -> int:
        """How many legs are off the tick now."""
        return len(self._parked)

    def _unpark_entry(self, leg_id: str) -> None:
        """``leg_id`` is going away: its pair's entry is dropped and the other leg goes back on the tick."""
        pair = self._parked.pop(leg_id, None)
        if pair is not None:
            pair.live = False
            for x in (pair.a, pair.b):
                if x.leg_id != leg_id and self.legs.get(x.leg_id) is x:
                    x.parked = False
                    self._parked.pop(x.leg_id, None)
                    self._ticking[x.leg_id] = x

    def _park(self, leg: RtpLeg, other: RtpLeg) -> None:
        """Both off the tick, with one entry in the wheel."""
        pair = _Pair(leg, other)
        for x in (leg, other):
            x.parked = True
            self._ticking.pop(x.leg_id, None)
            self._parked[x.leg_id] = pair
        self._schedule(pair, pair.due())

    def _schedule(self, pair: _Pair, at: float) -> None:
        """Check ``pair`` again at ``at``: in its slot, or on the next tick when that slot was checked already (two
        ticks can fall in one slot: they are not on the slots' grid). Never: only a wake-up brings it back."""
        if at == math.inf:
            return
        slot = int(at * _SLOTS_PER_S)
        if slot <= self._slot:
            self._next_tick.append(pair)
            return
        entries = self._wheel.get(slot)
        if entries is None:
            self._wheel[slot] = [pair]
        else:
            entries.append(pair)

    def _unpark(self, leg: RtpLeg) -> None:
        """Back on the tick, with the other leg of its bridge."""
        br = self.bridges.get(leg.leg_id)
        for x in (leg,) if br is None else (br.a, br.b):
            if self.legs.get(x.leg_id) is x:
                x.parked = False
                pair = self._parked.pop(x.leg_id, None)
                if pair is not None:
                    pair.live = False
                self._ticking[x.leg_id] = x

    def _wake_due(self, now: float) -> None:
        if self._waking:
            woken = self._waking[:]
            self._waking.clear()
            for leg in woken:
                self._unpark(leg)
        due: list[list[_Pair]] = []
        if self._next_tick:
            due.append(self._next_tick)
            self._next_tick = []
        cur = int(now * _SLOTS_PER_S)
        wheel = self._wheel
        if cur > self._slot:
            if cur - self._slot > len(wheel):
                slots: list[int] | range = sorted(k for k in wheel if k <= cur)
            else:
                slots = range(self._slot + 1, cur + 1)
            self._slot = cur
            for slot in slots:
                entries = wheel.pop(slot, None)
                if entries is not None:
                    due.append(entries)
        # Every parked pair whose sources keep sending comes up here every one or two ticks (its silence fillers'
        # time moves on with each packet): this loop is what a parked pair costs the tick, hence pair.due() and
        # _schedule inline.
        fill_after, per_s, next_tick = RELAY_FILL, _SLOTS_PER_S, self._next_tick
        for entries in due:
            for pair in entries:
                if not pair.live:
                    continue  # back on the tick meanwhile
                at = pair.timers
                if pair.fill_a:
                    fill = pair.a.relayed_at + fill_after
                    if fill < at:
                        at = fill
                if pair.fill_b:
                    fill = pair.b.relayed_at + fill_after
                    if fill < at:
                        at = fill
                if at <= now:
                    pair.refresh()  # its idle times may have moved on
                    at = pair.due()
                    if at <= now:
                        self._unpark(pair.a)
                        continue
                if at == math.inf:
                    continue
                to = int(at * per_s)
                if to <= cur:
                    next_tick.append(pair)
                    continue
                later = wheel.get(to)
                if later is None:
                    wheel[to] = [pair]
                else:
                    later.append(pair)

    def _park_settled(self, legs: list[RtpLeg], now: float) -> None:
        """Park the pairs among ``legs`` (relayed both ways) whose bridge left nothing for the tick to do."""
        for leg in legs:
            dst = leg.relay_to
            if leg.parked or dst is None or dst.relay_to is not leg:
                continue
            if leg.parkable(now) and dst.parkable(now):
                br = self.bridges.get(leg.leg_id)
                if br is not None and br.settled():
                    self._park(leg, dst)

    # -- the tick -------------------------------------------------------------------------------
    def tick(self, now: float, n: int) -> list[Outgoing]:
        """Advance every leg on the tick by one 20 ms frame; returns the RTP and RTCP datagrams to send."""
        self._wake_due(now)
        faults = self.faults
        legs = list(self._ticking.values())
        for leg in legs:
            try:
                leg.pull(now)
            except Exception as exc:
                self.fail(leg, exc)
        seen: set[int] = set()
        bridges = self.bridges
        for leg in legs:
            br = bridges.get(leg.leg_id)
            if br is not None and id(br) not in seen:
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
        relayed: list[RtpLeg] = []
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
            if leg.relayed:
                relayed.append(leg)
        if relayed and self.park:
            self._park_settled(relayed, now)
        return out

    def drain_events(self) -> list[MediaEvent]:
        ev, self.events = self.events, []
        return ev
