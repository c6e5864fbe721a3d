"""A two-party bridge on the shared tick: each leg hears the other; either side can be muted or held.

Muting a leg (``leg.muted``) stops its audio reaching the other side. Holding a side through :meth:`Bridge.hold`
stops audio in both directions for it and plays it ``music`` (if given) instead.

RFC 4733 digits are relayed as the receiving leg's own events (its timestamps, sequence numbers and SSRC), live:
the relayed event starts on the tick the first packet is heard and ends once the source event has ended. They
follow the audio: nothing is relayed from a muted or held side, nor to a held side (a relayed event under way
is ended at once).

Recording (:meth:`Bridge.record`): a two-channel recording, left = what crosses the bridge from the first leg's
peer, right = from the other's, one frame of each per tick (silence where nothing arrived, or while that side is
muted or held: what is recorded is what the other side could hear). It ends on the recorder's maximum length,
when stopped, or when the bridge closes (a leg closed or unbridged); the :class:`RecordingFinished` event is
the first leg's, as for a recording of that leg alone.

Relay. Each direction ``src -> dst`` is decided on every tick: it is relayed without decoding (see
:mod:`callplane.media.leg`) while nobody listens to ``src``'s audio and it reaches ``dst`` unchanged: both legs
use the same payload type, ``src`` has no sink (recorder, in-band DTMF or energy detector), the bridge is not
being recorded, ``src`` is not muted, neither side is held, and ``src``'s packets are plain 20 ms frames (a
``dst`` without telephone-event gets the audio and not the events, as a decoded direction would; the digits are
still reported). Otherwise it is decoded, mixed and re-encoded on the tick, as above (a
transcode PCMU <-> PCMA, a recording, hold music, a mute). A switch waits while a digit crosses that direction
(a digit that started one way ends the same way, end packets included, so the far peer never sees it twice;
a relayed digit counts as crossing until the next audio packet is relayed), unless it is a mute or a
hold, which act at once: a passed-through digit then gets its three end packets from the receiving leg (its
timestamp, the duration it reached). ``relay=False`` decodes every direction (for comparison).
"""

from __future__ import annotations

from callplane.media.events import RecordingFinished
from callplane.media.leg import RtpLeg
from callplane.media.recorder import Recorder
from callplane.media.sources import SILENCE, Source

__all__ = ["Bridge"]


class Bridge:
    def __init__(self, a: RtpLeg, b: RtpLeg, *, relay: bool = True) -> None:
        self.a, self.b = a, b
        self.relay = relay
        a.attached = b.attached = True
        self._held: dict[str, Source | None] = {}
        self.recorder: Recorder | None = None
        self._channels = (a, b)  # left, right; the RecordingFinished event is the left leg's

    def record(self, recorder: Recorder, left: RtpLeg) -> None:
        """Record both sides into ``recorder`` (two channels, ``left`` first) from this tick on."""
        self.recorder = recorder
        self._channels = (left, self.b if left is self.a else self.a)
        self._wake()

    def _wake(self) -> None:
        self.a._wake()
        self.b._wake()

    def settled(self) -> bool:
        """Both directions are relayed and stay so until something changes (which wakes the legs): the tick has
        nothing to do here (see :mod:`callplane.media.core`)."""
        a, b = self.a, self.b
        return a.relay_to is b and b.relay_to is a and self._want(a, b) and self._want(b, a)

    def _finished(self, rec: Recorder) -> None:
        left = self._channels[0]
        left.events.append(RecordingFinished(left.leg_id, rec.finished or "stopped", rec.duration_s))

    def _crossing(self, leg: RtpLeg) -> bytes:
        """What the bridge passes on from ``leg``'s peer this tick (silence while muted or held)."""
        heard = leg.heard
        return SILENCE if heard is None or leg.leg_id in self._held else heard

    def _record(self, now: float) -> None:
        rec = self.recorder
        assert rec is not None
        if rec.finished is not None:  # stopped by its owner, who reported it
            self.recorder = None
            return
        left, right = self._channels
        rec.write_pair(self._crossing(left), self._crossing(right), now)
        if rec.finished is not None:
            self.recorder = None
            self._finished(rec)

    def hold(self, leg: RtpLeg, music: Source | None = None) -> None:
        self._held[leg.leg_id] = music
        self._wake()

    def unhold(self, leg: RtpLeg) -> None:
        src = self._held.pop(leg.leg_id, None)
        if src is not None:
            src.stop()
        self._wake()

    def is_held(self, leg: RtpLeg) -> bool:
        return leg.leg_id in self._held

    def mix(self, now: float) -> None:
        """Phase 2 of the tick: set each leg's ``feed`` from the other's ``heard``."""
        if self.recorder is not None:
            self._record(now)
        for me, other in ((self.a, self.b), (self.b, self.a)):
            if self._steer(other, me):
                continue  # other's packets go straight to me's peer
            if me.leg_id in self._held:
                music = self._held[me.leg_id]
                me.feed = (music.read() if music is not None else None) or SILENCE
            elif other.leg_id in self._held:
                me.feed = SILENCE
            else:
                me.feed = other.heard if other.heard is not None else SILENCE
            if other.heard_dtmf or me.dtmf_out.open_relays:
                self._relay(me, other)

    def _steer(self, src: RtpLeg, dst: RtpLeg) -> bool:
        """Decide whether ``src -> dst`` is relayed this tick (see the module docstring); switches if need be."""
        forced = src.muted or bool(self._held) and (src.leg_id in self._held or dst.leg_id in self._held)
        want = not forced and self._want(src, dst)
        on = src.relay_to is dst
        if want == on:
            return on
        crossing = src.dtmf_in.active or (dst.relaying_event if on else dst.dtmf_out.busy)
        if crossing and not forced:
            return on  # a digit is crossing: switch once it has ended (and its end packets went the same way)
        if want:
            src.start_relay(dst)
        else:
            src.stop_relay()
            src.heard_dtmf = []  # what was heard while relaying went through as packets
        return want

    def _want(self, src: RtpLeg, dst: RtpLeg) -> bool:
        """Whether ``src -> dst`` can be relayed now, a mute or a hold aside."""
        return (
            self.relay
            and not src.muted
            and not self._held
            and self.recorder is None
            and not src.sinks
            and not src.relay_blocked
            and src.payload_type == dst.payload_type
            and not dst.dtmf_out.busy  # digits of dst's own (send_digits) go out on the tick
        )

    def _relay(self, me: RtpLeg, other: RtpLeg) -> None:
        """Hand ``other``'s RFC 4733 events of this tick to ``me``, or end ``me``'s relayed event if the audio
        does not flow between them now (muted or held mid-digit: the event must still end)."""
        flowing = not (
            me.leg_id in self._held or other.leg_id in self._held or other.muted or not other.sending or not me.sending
        )
        if not flowing:
            me.dtmf_out.end_all()
        elif other.heard_dtmf:
            me.relay_dtmf(other.heard_dtmf)

    def close(self) -> None:
        rec, self.recorder = self.recorder, None
        if rec is not None and rec.finished is None:
            rec.stop()
            self._finished(rec)
        for leg in (self.a, self.b):
            leg.stop_relay()
            leg.attached = False
            leg.feed = None
            leg.dtmf_out.end_all()
        for src in self._held.values():
            if src is not None:
                src.stop()
        self._held.clear()
        self._wake()
