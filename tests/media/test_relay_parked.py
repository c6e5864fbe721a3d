"""A bridge relayed both ways leaves the tick (``MediaCore`` parks the pair) and behaves exactly as if ticked: the
same datagrams at the same times and the same events, through everything that needs the clock (RTCP, the idle
timeout, the silence filler, a digit's end) or changes the bridge (mute, hold, recording, digits sent, a peer's
hold, a packet that cannot be relayed, a new remote, the end of the bridge)."""

from __future__ import annotations

from collections.abc import Callable

from callplane.core.ids import IdSource
from callplane.media.core import MediaCore
from callplane.media.dtmf import TelephoneEvent
from callplane.media.events import LegIdle
from callplane.media.leg import RtpLeg
from callplane.media.recorder import Recorder
from callplane.media.rtcp import SenderReport, parse_compound
from callplane.media.rtp import build
from callplane.media.sources import ToneSource

PEERS = {"a": ("127.0.0.1", 5000), "b": ("127.0.0.1", 6000)}
Record = tuple[float, str, bytes | bytearray, tuple[str, int]]  # (time, leg, datagram, destination)


class Run:
    """Legs a and b bridged on a core in virtual time, both peers sending a 20 ms frame per tick (5 and 9 ms
    after it); ``out`` is every datagram the legs send (tick and relay), ``events`` every event, with its time."""

    def __init__(self, park: bool) -> None:
        self.core = MediaCore(IdSource(1))
        self.core.park = park
        self.legs = {
            name: self.core.add_leg(
                # each leg its own ids: the random RTCP intervals must not depend on the order legs are ticked in
                RtpLeg(name, IdSource(seed), remote=PEERS[name], rtcp_interval=1.0, idle_timeout=0.5, start=10.0)
            )
            for name, seed in (("a", 11), ("b", 12))
        }
        self.bridge = self.core.bridge("a", "b")
        self.n = 0
        self.seq = {"a": 100, "b": 5000}
        self.quiet: set[str] = set()
        self.out: list[Record] = []
        self.events: list[tuple[float, object]] = []
        self.most_parked = 0
        self.parked_ticks = 0

    def send(self, name: str, packet: bytes, at: float) -> None:
        relayed = self.legs[name].receive_rtp(packet, PEERS[name], at)
        if relayed is not None:
            self.out.append((at, *relayed))

    def frame(self, name: str, pt: int = 0, data: bytes | None = None) -> bytes:
        k = self.seq[name]
        self.seq[name] += 1
        body = data if data is not None else bytes((k + i) & 0x7F for i in range(160))
        return build(pt, k & 0xFFFF, (7 + 160 * k) & 0xFFFFFFFF, 0x1000 if name == "a" else 0x2000, body)

    def tick(self, extra: Callable[[float], None] | None = None) -> None:
        t = 10.0 + self.n * 0.02
        self.out += [(t, *o) for o in self.core.tick(t, self.n)]
        self.events += [(t, e) for e in self.core.drain_events()]
        self.most_parked = max(self.most_parked, self.core.parked)
        self.parked_ticks += self.core.parked == 2
        for name, delay in (("a", 0.005), ("b", 0.009)):
            if name not in self.quiet:
                self.send(name, self.frame(name), t + delay)
        if extra is not None:
            extra(t)
        self.n += 1

    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.tick()

    def per_leg(self) -> dict[str, list[Record]]:
        """What each leg sent, in order (the order between legs within a tick is not part of the behaviour)."""
        return {name: [r for r in self.out if r[1] == name] for name in PEERS}


def digit(run: Run, end: bool, duration: int) -> Callable[[float], None]:
    def send(t: float) -> None:
        ev = TelephoneEvent(3, end, 10, duration)
        run.send("a", build(101, run.seq["a"], 999, 0x1000, bytes(ev), marker=duration == 160), t + 0.012)
        run.seq["a"] += 1

    return send


def scenario(run: Run) -> None:
    a, b = run.legs["a"], run.legs["b"]
    run.ticks(150)  # 3 s: RTCP reports of both legs while parked
    run.quiet.add("a")  # a's peer goes quiet: b's tick fills with silence; a's idle timeout fires
    run.ticks(40)
    run.quiet.discard("a")
    run.ticks(20)
    a.muted = True  # decoded: b's peer hears silence
    run.ticks(10)
    a.muted = False
    run.ticks(20)
    run.bridge.hold(b, ToneSource([800], None, 0.3))
    run.ticks(10)
    run.bridge.unhold(b)
    run.ticks(20)
    for d in (160, 320, 480):  # an RFC 4733 digit from a's peer; its end packets lost: the receiver ends it
        run.tick(digit(run, False, d))
    run.ticks(30)
    b.send_digits("12")
    run.ticks(40)
    rec = Recorder(max_length_s=None)
    a.add_sink(rec)
    run.ticks(10)
    a.remove_sink(rec)
    run.ticks(20)
    b.sending = False  # b's peer holds us: nothing to it, and no filler either
    run.quiet.add("a")
    run.ticks(60)  # a's idle timeout while parked
    run.quiet.discard("a")
    b.sending = True
    run.ticks(20)
    a.sending = b.sending = False  # both peers hold: the pair's next check is far (its RTCP)
    run.quiet.add("a")
    run.ticks(30)
    run.quiet.discard("a")
    run.tick()  # one packet from a's peer: its idle timeout runs again, from there
    run.quiet.add("a")
    run.ticks(40)
    run.quiet.discard("a")
    a.sending = b.sending = True
    run.ticks(20)
    run.send("a", run.frame("a", data=bytes(80)), 10.0 + run.n * 0.02 - 0.01)  # 10 ms: cannot be relayed
    run.ticks(20)
    b.relay_blocked = False
    b.set_remote(("127.0.0.1", 6100), now=10.0 + run.n * 0.02)
    run.ticks(20)
    run.core.unbridge("a")
    run.ticks(10)


def test_a_parked_bridge_sends_and_reports_exactly_what_a_ticked_one_does() -> None:
    parked, ticked = Run(park=True), Run(park=False)
    scenario(parked)
    scenario(ticked)
    assert ticked.most_parked == 0 and parked.most_parked == 2
    assert parked.parked_ticks > 200  # most of the run off the tick
    assert parked.per_leg() == ticked.per_leg()
    for name in PEERS:
        assert [(t, e) for t, e in parked.events if getattr(e, "leg_id", None) == name] == [
            (t, e) for t, e in ticked.events if getattr(e, "leg_id", None) == name
        ]
    # what was compared holds what needs the clock: reports while parked, idle timeouts, fillers, digits
    reports = [(t, leg) for t, leg, d, _ in parked.out if 200 <= d[1] <= 204]
    assert len([1 for t, leg in reports if t < 13.0 and leg == "a"]) >= 2
    assert [e.leg_id for _, e in parked.events if isinstance(e, LegIdle)] == ["a"] * 4


def test_a_parked_legs_sender_report_counts_the_relayed_packets() -> None:
    run = Run(park=True)
    run.ticks(100)
    assert run.core.parked == 2
    b = run.legs["b"]
    reports = [(t, d) for t, leg, d, _ in run.out if leg == "b" and 200 <= d[1] <= 204]
    t, last = reports[-1]
    sr = parse_compound(bytes(last))[0]
    assert isinstance(sr, SenderReport)
    sent_before = len([1 for tt, leg, d, _ in run.out if leg == "b" and d[1] < 200 and tt < t])
    assert sr.packet_count == sent_before > 0 and b.packets_sent >= sent_before


def test_the_other_leg_of_a_parked_pair_goes_on_when_one_leg_closes() -> None:
    run = Run(park=True)
    run.ticks(20)
    assert run.core.parked == 2
    run.core.remove_leg("a")
    run.quiet.add("a")
    before = len(run.out)
    run.ticks(3)
    sent = [(leg, d) for _, leg, d, _ in run.out[before:]]
    assert run.core.parked == 0
    assert [leg for leg, d in sent if d[1] < 200] == ["b"] * 3  # unbridged: its own stream on the tick again
