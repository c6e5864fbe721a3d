from __future__ import annotations

from itertools import groupby

from hypothesis import given
from hypothesis import strategies as st

from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.jitter import JitterBuffer
from callplane.media.leg import RtpLeg
from callplane.media.recorder import Recorder
from callplane.media.rtp import build
from callplane.media.sources import SILENCE


def f(n: int) -> bytes:
    return bytes([n % 256]) * 320


class Stream:
    """A peer sending one packet per tick into a buffer; ``tick`` pops once and records the queue length seen."""

    def __init__(self, jb: JitterBuffer) -> None:
        self.jb, self.seq = jb, 1  # f(0) would be all zeros, like SILENCE
        self.queued: list[int] = []
        self.played: list[bytes | None] = []

    def tick(self, *, send: bool = True, pop: bool = True) -> None:
        if send:
            self.jb.push(self.seq & 0xFFFF, f(self.seq))
        self.seq += 1
        if pop:
            self.queued.append(len(self.jb))
            self.played.append(self.jb.pop())

    def runs(self) -> list[tuple[int, int]]:
        return [(k, len(list(g))) for k, g in groupby(self.queued)]


def test_in_order_stream_plays_through() -> None:
    jb = JitterBuffer(prefill=1)
    out = []
    for seq in range(10):
        jb.push(seq, f(seq))
        out.append(jb.pop())
    assert out == [f(s) for s in range(10)]
    assert jb.stats.played == 10 and jb.stats.lost == 0


def test_reorder_within_depth_is_repaired() -> None:
    jb = JitterBuffer(depth=3, prefill=1)
    for seq in (0, 2, 1, 3, 5, 4):
        jb.push(seq, f(seq))
    assert [jb.pop() for _ in range(6)] == [f(s) for s in range(6)]
    assert jb.stats.lost == 0


def test_loss_becomes_silence_and_late_packet_is_dropped() -> None:
    jb = JitterBuffer(depth=3, prefill=1)
    jb.push(0, f(0))
    assert jb.pop() == f(0)
    for seq in (2, 3, 4):  # 1 is lost
        jb.push(seq, f(seq))
    assert [jb.pop() for _ in range(4)] == [SILENCE, f(2), f(3), f(4)]
    jb.push(1, f(1))  # arrives too late
    assert jb.stats.lost == 1 and jb.stats.late == 1
    assert jb.pop() is None


def test_missing_packet_waits_then_is_declared_lost() -> None:
    jb = JitterBuffer(depth=3, prefill=1)
    jb.push(0, f(0))
    jb.pop()
    jb.push(2, f(2))  # 1 missing, only one queued behind it
    assert [jb.pop() for _ in range(3)] == [None, None, None]
    assert jb.pop() == SILENCE
    assert jb.pop() == f(2)


def test_duplicates_and_wraparound() -> None:
    jb = JitterBuffer(prefill=1)
    seqs = [65534, 65535, 65535, 0, 1]
    for s in seqs:
        jb.push(s, f(s))
    assert jb.stats.duplicates == 1
    assert [jb.pop() for _ in range(4)] == [f(65534), f(65535), f(0), f(1)]


def test_underrun_does_not_advance() -> None:
    jb = JitterBuffer(prefill=1)
    jb.push(10, f(10))
    assert jb.pop() == f(10)
    assert jb.pop() is None  # nothing came this tick
    jb.push(11, f(11))
    assert jb.pop() == f(11)
    assert jb.stats.underruns == 1 and jb.stats.lost == 0


def test_overflow_drops_oldest_and_resync_on_jump() -> None:
    jb = JitterBuffer(depth=3, capacity=4, prefill=1)
    for s in range(6):
        jb.push(s, f(s))
    assert jb.stats.overflow == 2
    assert jb.pop() == f(2)
    jb.pop()
    jb.pop()
    jb.pop()
    jb.push(5000, f(5000))
    assert jb.stats.resyncs == 1
    assert jb.pop() == f(5000)


def test_prefill_holds_back_frames_to_absorb_jitter() -> None:
    jb = JitterBuffer(prefill=2)
    jb.push(0, f(0))
    assert jb.pop() is None  # one frame queued: wait for a second
    jb.push(1, f(1))
    assert [jb.pop(), jb.pop(), jb.pop()] == [f(0), f(1), None]  # then it ran dry: refill again
    jb.push(2, f(2))
    assert jb.pop() is None
    jb.push(3, f(3))
    assert jb.pop() == f(2)
    # From now on packets come in pairs every 40 ms (20 ms of jitter): the held-back frame covers it, no gaps.
    out = []
    for k in range(10):
        if k % 2 == 0:
            jb.push(4 + k, f(4 + k))
            jb.push(5 + k, f(5 + k))
        out.append(jb.pop())
    assert out == [f(s) for s in range(3, 13)]
    assert jb.stats.underruns == 1 and jb.stats.lost == 0


def test_prefill_gives_up_waiting_after_prefill_ticks() -> None:
    jb = JitterBuffer(prefill=2)
    jb.push(0, f(0))
    assert [jb.pop(), jb.pop(), jb.pop()] == [None, None, f(0)]


@given(
    st.lists(st.integers(0, 2), min_size=30, max_size=80),
    st.sets(st.integers(1, 79), max_size=5),
    st.integers(0, 65535),
)
def test_property_small_reorder_and_loss(displace: list[int], lost: set[int], start: int) -> None:
    """Packets displaced by up to 2 places and a few losses: what plays is in order, without duplicates."""
    n = len(displace)
    order = sorted(range(n), key=lambda i: i + displace[i] + 0.5 * (i % 2))
    jb = JitterBuffer(depth=3, prefill=2)
    played: list[int] = []
    for i in order:
        if i in lost:
            continue
        jb.push((start + i) & 0xFFFF, f(i))
        frame = jb.pop()
        if frame is not None and frame != SILENCE:
            played.append(frame[0])
    for _ in range(10):
        frame = jb.pop()
        if frame is not None and frame != SILENCE:
            played.append(frame[0])
    assert played == sorted(played) and len(set(played)) == len(played)
    assert set(played) <= {i % 256 for i in range(n)} - {i % 256 for i in lost}
    assert len(played) >= n - len(lost) - 3 * len(lost) - 3


def test_sequence_numbers_of_non_audio_packets_are_stepped_over() -> None:
    jb = JitterBuffer(depth=3, prefill=1)
    jb.push(0, f(0))
    jb.push(1, b"")  # an RFC 4733 event packet took this number
    jb.push(2, b"")
    jb.push(3, f(3))
    assert [jb.pop(), jb.pop(), jb.pop()] == [f(0), f(3), None]  # no concealment frame, no tick spent
    assert jb.stats.lost == 0


def test_latency_added_by_a_ticker_stall_drains_back_to_the_target() -> None:
    s = Stream(JitterBuffer(prefill=2, shrink_window=25))
    for _ in range(10):
        s.tick()
    for _ in range(5):  # the ticker stalled for 100 ms: five packets came, nothing was played
        s.tick(pop=False)
    for _ in range(160):
        s.tick()
    # Frames queued at each pop: 2 (the target), 7 after the stall, then one frame fewer after every 25 pops
    # spent above the target, until it is back at 2 and stays there.
    assert s.runs() == [(1, 1), (2, 9), (7, 25), (6, 25), (5, 25), (4, 25), (3, 25), (2, 35)]
    assert s.jb.stats.shrunk == 5 and s.jb.stats.lost == 0
    played = [fr for fr in s.played if fr is not None]
    assert played == [f(n) for n in range(1, 175) if n not in (34, 60, 86, 112, 138)]  # one frame per window


def test_latency_added_by_a_loss_drains_back_to_the_target() -> None:
    s = Stream(JitterBuffer(depth=3, prefill=2, shrink_window=25))
    for _ in range(10):
        s.tick()
    s.tick(send=False)  # one packet lost: the buffer waits for it before playing a concealment frame
    for _ in range(100):
        s.tick()
    # It waited two ticks for the missing packet (reordering tolerance), which left four frames queued; the
    # two extra frames are dropped 25 pops apart, and the queue is back at the target.
    assert s.runs() == [(1, 1), (2, 9), (1, 2), (2, 1), (3, 1), (4, 24), (3, 25), (2, 48)]
    assert s.jb.stats.lost == 1 and s.jb.stats.shrunk == 2
    assert s.played.count(SILENCE) == 1


def test_a_loss_run_that_emptied_the_queue_adds_no_latency() -> None:
    s = Stream(JitterBuffer(depth=3, prefill=2))
    for _ in range(10):
        s.tick()
    for _ in range(12):  # 240 ms without packets: the queue runs dry, the ticks go by as underruns
        s.tick(send=False)
    for _ in range(10):
        s.tick()
    # Playout resumes from the first packet after the run, after one refill tick, with the latency it had before;
    # the packets of the run are not played again as concealment frames.
    assert s.queued[-9:] == [2] * 9
    assert s.played[-10:] == [None] + [f(n) for n in range(23, 32)]
    assert s.jb.stats.lost == 12 and SILENCE not in s.played


def test_a_packet_reordered_just_after_the_queue_ran_dry_is_still_played() -> None:
    jb = JitterBuffer(depth=3, prefill=2)
    jb.push(1, f(1))
    jb.push(2, f(2))
    assert [jb.pop(), jb.pop(), jb.pop()] == [f(1), f(2), None]  # ran dry
    jb.push(4, f(4))  # 3 comes three ticks late: later than the refill waits, within the reorder depth
    assert [jb.pop(), jb.pop(), jb.pop()] == [None, None, None]
    jb.push(3, f(3))
    jb.push(5, f(5))
    assert [jb.pop(), jb.pop(), jb.pop()] == [f(3), f(4), f(5)]
    assert jb.stats.lost == 0 and jb.stats.late == 0


def test_overflow_skips_the_missing_packet_instead_of_dropping_a_frame() -> None:
    jb = JitterBuffer(depth=4, capacity=4, prefill=1)
    jb.push(0, f(0))
    assert jb.pop() == f(0)
    for seq in range(2, 7):  # 1 is missing; five frames arrive in one burst
        jb.push(seq, f(seq))
    assert [jb.pop() for _ in range(5)] == [f(s) for s in range(2, 7)]
    assert (jb.stats.lost, jb.stats.overflow) == (1, 0)


def test_packets_reordered_before_playout_begins_are_kept() -> None:
    jb = JitterBuffer(prefill=2)
    assert [jb.pop(), jb.pop()] == [None, None]  # the leg ticks before the peer's first packet
    jb.push(11, f(11))
    jb.push(10, f(10))
    assert [jb.pop(), jb.pop()] == [f(10), f(11)]
    assert jb.stats.late == 0


def test_a_new_ssrc_restarts_the_buffer() -> None:
    leg = RtpLeg("L1", IdSource(3), remote=("127.0.0.1", 40000))
    leg.add_sink(Recorder())  # someone listens: the leg buffers what it hears
    peer = ("127.0.0.1", 40000)
    for seq in range(100, 104):
        leg.receive_rtp(build(0, seq, seq * 160, 1, bytes([seq]) * 160), peer, 0.0)
    leg.pull(0.0)
    # The peer restarts its stream (new SSRC, new random sequence behind the old one): its audio is played,
    # not dropped as late, and what the old sender had queued is discarded.
    for seq in range(40, 43):
        leg.receive_rtp(build(0, seq, 0, 2, bytes([seq]) * 160), peer, 0.02)
    heard = []
    for n in range(4):
        leg.pull(0.04 + n * 0.02)
        heard.append(leg.heard)
    assert heard == [g711.decode(bytes([s]) * 160, 0) for s in (40, 41, 42)] + [None]
