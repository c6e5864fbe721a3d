"""The engine over real loopback UDP, driven by a raw Python peer."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callplane.core.errors import MediaError
from callplane.media import g711
from callplane.media.aio import MediaEngine, PortAllocator
from callplane.media.dtmf import TelephoneEvent
from callplane.media.events import (
    DigitReceived,
    LegFailed,
    LegIdle,
    MediaEvent,
    RecordingFinished,
    RemoteLatched,
    SourceFinished,
)
from callplane.media.recorder import Recorder
from callplane.media.rtcp import Bye, ReceiverReport, SenderReport, build_compound, parse_compound
from callplane.media.rtp import build, seq_diff
from callplane.media.sources import FRAME_BYTES, SILENCE, PcmSource, ToneSource
from tests.media.pcapfile import SIPP, udp_payloads
from tests.media.rawpeer import RawPeer


@pytest.fixture(params=["reader", "protocol", "poll"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(port_range=(30000, 60000), rtcp_interval=3600.0, io_mode=request.param)
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture
async def peer() -> AsyncIterator[RawPeer]:
    p = RawPeer()
    yield p
    p.close()


async def next_event(eng: MediaEngine, kind: type[MediaEvent], timeout: float = 5.0) -> MediaEvent:
    async def go() -> MediaEvent:
        while True:
            ev = await eng.events.get()
            if isinstance(ev, kind):
                return ev

    return await asyncio.wait_for(go(), timeout)


async def test_pacing_sequence_timestamps_and_payload(engine: MediaEngine, peer: RawPeer) -> None:
    leg_id, port = engine.create_leg()
    assert port % 2 == 0
    engine.set_remote(leg_id, "127.0.0.1", peer.port)
    engine.set_source(leg_id, ToneSource([1000], 0.4))
    pkts = await peer.recv(25)
    assert pkts[0].marker and not any(p.marker for p in pkts[1:])
    assert [seq_diff(b.sequence, a.sequence) for a, b in zip(pkts, pkts[1:], strict=False)] == [1] * 24
    steps = [(b.timestamp - a.timestamp) // 160 for a, b in zip(pkts, pkts[1:], strict=False)]
    assert all((b.timestamp - a.timestamp) % 160 == 0 for a, b in zip(pkts, pkts[1:], strict=False))
    assert sum(steps) - len(steps) <= engine.ticker.overruns  # a skipped tick advances time, never a burst
    tone = ToneSource([1000], 0.4)
    sent = [g711.encode(f, 0) for f in iter(tone.read, None)]
    assert [p.payload for p in pkts[:20]] == sent
    assert pkts[20].payload == g711.encode(SILENCE, 0)
    assert await next_event(engine, SourceFinished) == SourceFinished(leg_id)


def whole_digit(event: int, ts: int, ssrc: int) -> list[bytes]:
    start = build(101, 100, ts, ssrc, bytes(TelephoneEvent(event, False, 10, 160)), marker=True)
    return [start] + [build(101, 101 + k, ts, ssrc, bytes(TelephoneEvent(event, True, 10, 800))) for k in range(3)]


async def test_latches_to_the_peer_and_a_stranger_neither_moves_audio_nor_injects_digits(
    engine: MediaEngine, peer: RawPeer
) -> None:
    decoy, stranger = RawPeer(), RawPeer()
    try:
        leg_id, port = engine.create_leg()
        engine.set_remote(leg_id, "127.0.0.1", decoy.port)  # what SDP said (a NAT would make it wrong)
        peer.send(build(0, 1, 0, 1234, b"\xff" * 160), port)
        assert await next_event(engine, RemoteLatched) == RemoteLatched(leg_id, "127.0.0.1", peer.port)
        # A stranger who found the port: audio under its own SSRC, then a whole digit "1".
        stranger.send(build(0, 7, 0, 0xBAD, b"\x00" * 160), port)
        for raw in whole_digit(1, 8000, 0xBAD):
            stranger.send(raw, port)
        for raw in whole_digit(5, 9000, 1234):  # after the stranger's: had "1" been taken, it would come first
            peer.send(raw, port)
        ev = await next_event(engine, DigitReceived)
        assert isinstance(ev, DigitReceived) and ev.digit == "5"
        pkts = await peer.recv(3)
        assert {p.ssrc for p in pkts} == {engine.leg(leg_id).ssrc}
        with pytest.raises(BlockingIOError):
            stranger.sock.recvfrom(2048)  # not one packet of our audio went to the stranger
        assert engine.leg(leg_id).remote == peer.addr and engine.leg(leg_id).foreign_packets == 5
    finally:
        decoy.close()
        stranger.close()


@pytest.mark.parametrize("sdp", ["peer", "decoy"])
async def test_strangers_random_packets_through_the_adapter_change_nothing(
    engine: MediaEngine, peer: RawPeer, sdp: str
) -> None:
    """Fuzz the source address through the real receive path: after the peer spoke, random packets (RTP-shaped or
    not, telephone-events included) from other sockets move nothing, report nothing and stop nothing. With the SDP
    naming the peer itself, the reader modes pin the socket to it and the kernel drops the strangers' packets; with
    a decoy in the SDP and the peer latched (two accepted sources), the leg's own check drops and counts them."""
    rng = random.Random(4733)
    strangers = [RawPeer() for _ in range(4)]
    decoy = RawPeer()
    try:
        leg_id, port = engine.create_leg()
        engine.set_remote(leg_id, "127.0.0.1", peer.port if sdp == "peer" else decoy.port)
        peer.send(build(0, 1, 0, 1234, b"\xff" * 160), port)
        await peer.recv(2)
        while not engine.events.empty():
            engine.events.get_nowait()  # the latch to the peer, with the decoy
        pinned = sdp == "peer" and engine.io_mode != "protocol"
        rtp_shaped = 0  # sure to reach the source check (a random body may too, if it looks like RTP v2)
        for k in range(200):
            pt = rng.choice([0, 8, 101, 13, 200, 127])
            body = rng.randbytes(rng.randrange(0, 200))
            pkt = build(pt, k, rng.getrandbits(32), rng.getrandbits(32), body) if k % 4 else body
            to = rng.choice([port, port + 1])
            rtp_shaped += bool(k % 4) and to == port
            rng.choice(strangers).send(pkt, to)
            if k % 4 == 3:
                await asyncio.sleep(0.02)  # read as they come (poll reads 4 a tick): a socket queues under 1 s
        for _ in range(100):
            if pinned or engine.leg(leg_id).foreign_packets >= rtp_shaped:
                break
            await asyncio.sleep(0.02)
        await peer.recv(10)  # the ticker ran on: the leg still sends to its peer, and only to it
        queued = []
        while not engine.events.empty():
            queued.append(engine.events.get_nowait())
        assert not [e for e in queued if isinstance(e, DigitReceived | RemoteLatched)]
        assert engine.leg(leg_id).remote == peer.addr
        rtp_foreign = engine.leg(leg_id).foreign_packets
        if pinned:  # only the RTCP socket's share reached a check: the RTP socket never saw a stranger
            assert rtp_foreign <= 200 - rtp_shaped
        else:
            assert rtp_foreign >= rtp_shaped
        for s in strangers:
            with pytest.raises(BlockingIOError):
                s.sock.recvfrom(2048)
    finally:
        for s in strangers + [decoy]:
            s.close()


async def test_the_socket_is_pinned_to_a_peer_at_its_sdp_address_until_a_new_address_unpins_it(
    peer: RawPeer,
) -> None:
    """Pinned, a stranger's datagram is refused by the kernel (ICMP port unreachable: its connected socket sees
    ECONNREFUSED); after ``set_remote`` names a new address the latch window is open to any source again, so a
    peer behind NAT answering a re-INVITE latches as before."""
    engine = MediaEngine(port_range=(30000, 60000), rtcp_interval=3600.0)
    await engine.start()
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nat, moved = RawPeer(), RawPeer()
    try:
        leg_id, port = engine.create_leg()
        engine.set_remote(leg_id, "127.0.0.1", peer.port)
        peer.send(build(0, 1, 0, 1234, b"\xff" * 160), port)
        await peer.recv(2)
        stranger.bind(("127.0.0.1", 0))
        stranger.connect(("127.0.0.1", port))
        stranger.send(build(0, 1, 0, 0xBAD, b"\x00" * 160))
        stranger.settimeout(2.0)
        with pytest.raises(ConnectionRefusedError):
            stranger.recv(2048)
        assert engine.leg(leg_id).foreign_packets == 0 and engine.leg(leg_id).remote == peer.addr
        # a re-INVITE moves the media to an address the peer does not send from (its NAT's is another)
        engine.set_remote(leg_id, "127.0.0.1", moved.port)
        nat.send(build(0, 2, 160, 1234, b"\xff" * 160), port)
        assert await next_event(engine, RemoteLatched) == RemoteLatched(leg_id, "127.0.0.1", nat.port)
        pkts = await nat.recv(3)
        assert {p.ssrc for p in pkts} == {engine.leg(leg_id).ssrc}
    finally:
        stranger.close()
        nat.close()
        moved.close()
        await engine.close()


async def test_after_a_stall_a_leg_hears_current_audio_not_seconds_of_backlog(
    engine: MediaEngine, peer: RawPeer
) -> None:
    """The loop stalls for 1.5 s while the peer sends 3 s of audio: what waits in the socket for the leg is bounded
    (under a second of it), the rest is dropped by the kernel, so the leg is current again at once."""
    leg_id, port = engine.create_leg()
    engine.set_remote(leg_id, "127.0.0.1", peer.port)
    peer.send(build(0, 0, 0, 1234, b"\xff" * 160), port)
    await peer.recv(2)
    before = engine.leg(leg_id).packets_received
    time.sleep(0.2)  # the loop is blocked from here on
    for k in range(1, 151):
        peer.send(build(0, k, 160 * k, 1234, b"\xff" * 160), port)
    time.sleep(1.3)
    for _ in range(20):
        await asyncio.sleep(0.05)  # the loop drains what the socket kept
    taken = engine.leg(leg_id).packets_received - before
    assert 1 <= taken <= 50  # about 40 on loopback: 0.8 s of audio, not 3 s


async def test_set_remote_takes_no_host_name(engine: MediaEngine) -> None:
    leg_id, _ = engine.create_leg()
    for host in ("localhost", "media.invalid", "::1"):
        with pytest.raises(MediaError):
            engine.set_remote(leg_id, host, 4000)
    assert engine.leg(leg_id).remote is None


async def test_send_digits_on_the_wire(engine: MediaEngine, peer: RawPeer) -> None:
    leg_id, _ = engine.create_leg(dtmf_payload_type=96)
    engine.set_remote(leg_id, "127.0.0.1", peer.port)
    await peer.recv(2)
    engine.send_digits(leg_id, "7")
    pkts = await peer.recv(12)
    ev = [p for p in pkts if p.payload_type == 96]
    assert len(ev) == 8
    i = pkts.index(ev[0])
    assert pkts[i : i + 8] == ev  # consecutive, one per tick, no audio in between
    assert [TelephoneEvent.parse(p.payload) for p in ev] == [
        TelephoneEvent(7, False, 10, 160 * k) for k in range(1, 6)
    ] + [TelephoneEvent(7, True, 10, 800)] * 3
    assert [p.marker for p in ev] == [True] + [False] * 7
    assert {p.timestamp for p in ev} == {ev[0].timestamp}
    after = pkts[i + 8]
    assert after.payload_type == 0
    assert after.timestamp - ev[0].timestamp >= 8 * 160  # the event spanned 8 ticks of media time


async def test_receive_sipp_rfc2833_pcap(engine: MediaEngine, peer: RawPeer) -> None:
    leg_id, port = engine.create_leg()
    engine.set_remote(leg_id, "127.0.0.1", peer.port)
    for name, digit in (("dtmf_2833_3.pcap", "3"), ("dtmf_2833_pound.pcap", "#")):
        for raw in udp_payloads(SIPP / name):
            peer.send(raw, port)
        ev = await next_event(engine, DigitReceived)
        assert isinstance(ev, DigitReceived)
        assert (ev.leg_id, ev.digit, ev.method) == (leg_id, digit, "rfc4733")


async def test_record_with_reordered_input(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    leg_id, port = engine.create_leg()
    engine.set_remote(leg_id, "127.0.0.1", peer.port)
    tone = ToneSource([700], None, 0.3)
    frames = [g711.encode(tone.read() or b"", 0) for _ in range(30)]
    rec = Recorder(max_length_s=None, silence_timeout_s=1.0, trim_silence=True)  # generous: shared CPU
    engine.record(leg_id, tmp_path / "r.wav", rec)
    # Like a caller after the beep, the peer is silent for a moment before it speaks: the recorder's silence timer
    # must count from the start of the recording, not from 0.0 on the loop's clock.
    await asyncio.sleep(0.2)
    order = list(range(30))
    order[4], order[5] = order[5], order[4]
    order[10], order[11] = order[11], order[10]
    for k, seq in enumerate(order):  # pairs 40 ms apart, swapped within a pair: the jitter buffer reorders
        peer.send(build(0, seq, seq * 160, 99, frames[seq]), port)
        if k % 2:
            await asyncio.sleep(0.04)
    ev = await next_event(engine, RecordingFinished)
    assert isinstance(ev, RecordingFinished)
    assert ev.reason == "silence" and ev.path == str(tmp_path / "r.wav")
    with wave.open(str(tmp_path / "r.wav")) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        pcm = w.readframes(w.getnframes())
    # Nothing lost, order repaired. (A stalled shared CPU can still make the buffer run dry, which records a
    # tick of silence in place: wall-clock length is kept. Those frames are set aside here.)
    got = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    assert [fr for fr in got if fr != SILENCE] == [g711.decode(f, 0) for f in frames]
    assert ev.duration_s == pytest.approx(len(got) * 0.02)


async def test_bridge_passes_audio_both_ways(engine: MediaEngine, peer: RawPeer) -> None:
    other = RawPeer()
    try:
        a, pa = engine.create_leg()
        b, pb = engine.create_leg(payload_type=g711.PCMA)
        engine.set_remote(a, "127.0.0.1", peer.port)
        engine.set_remote(b, "127.0.0.1", other.port, payload_type=g711.PCMA)
        engine.bridge(a, b)
        marker = bytes([0x9A]) * 160  # a mu-law code that survives mu-law -> A-law -> PCM unchanged in shape
        for seq in range(15):
            peer.send(build(0, seq, seq * 160, 5, marker), pa)
            other.send(build(8, seq, seq * 160, 6, b"\x55" * 160), pb)
            await asyncio.sleep(0.02)
        got_b = await other.recv(40)
        got_a = await peer.recv(40)
        want_b = g711.encode(g711.decode(marker, 0), g711.PCMA)
        want_a = g711.encode(g711.decode(b"\x55" * 160, 8), g711.PCMU)
        assert {p.payload_type for p in got_b} == {8} and want_b in [p.payload for p in got_b]
        assert want_a in [p.payload for p in got_a]
        with pytest.raises(MediaError):
            engine.bridge(a, b)
    finally:
        other.close()


async def test_conference_mix_minus_on_the_wire(engine: MediaEngine) -> None:
    peers = [RawPeer() for _ in range(3)]
    try:
        values = [1000, -3000, 250]
        legs = []
        for p in peers:
            leg_id, port = engine.create_leg()
            engine.set_remote(leg_id, "127.0.0.1", p.port)
            engine.join("room", leg_id, beep=False)
            legs.append(port)
        payloads = [g711.encode(np.full(160, v, "<i2").tobytes(), 0) for v in values]
        decoded = [int(np.frombuffer(g711.decode(pl, 0), "<i2")[0]) for pl in payloads]
        for seq in range(25):
            for p, port, pl in zip(peers, legs, payloads, strict=True):
                p.send(build(0, seq, seq * 160, 1, pl), port)
            await asyncio.sleep(0.02)
        for i, p in enumerate(peers):
            expect = sum(decoded) - decoded[i]
            want = g711.encode(np.full(160, expect, "<i2").tobytes(), 0)
            got = [pk.payload for pk in await p.recv(40)]
            assert want in got, f"participant {i} never heard the others' sum {expect}"
            own_in_mix = g711.encode(np.full(160, sum(decoded), "<i2").tobytes(), 0)
            assert own_in_mix not in got  # nobody hears themselves
    finally:
        for p in peers:
            p.close()


def test_port_allocator_skips_busy_ports_and_is_even() -> None:
    base = random.randrange(42000, 60000) & ~1
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: list[tuple[socket.socket, socket.socket, int]] = []
    try:
        try:
            busy.bind(("127.0.0.1", base + 3))  # the RTCP half of the second pair is taken
        except OSError:
            pytest.skip("random port happened to be in use")
        alloc = PortAllocator(base, base + 5)
        with pytest.raises(MediaError, match="no free"):
            while True:
                got.append(alloc.allocate())
        ports = sorted(p for _, _, p in got)
        assert ports and set(ports) <= {base, base + 4}
        assert all(rtcp.getsockname()[1] == rtp.getsockname()[1] + 1 for rtp, rtcp, _ in got)
        alloc.release(ports[0])
        assert ports[0] not in alloc.in_use
    finally:
        busy.close()
        for a, b, _ in got:
            a.close()
            b.close()


def test_pcm_source_frames_for_a_recording() -> None:
    assert PcmSource(bytes(FRAME_BYTES)).read() == SILENCE


async def test_hold_and_mute_through_the_facade(engine: MediaEngine) -> None:
    a, _ = engine.create_leg()
    b, _ = engine.create_leg()
    c, _ = engine.create_leg()
    with pytest.raises(MediaError, match="neither"):
        engine.hold(a)
    engine.bridge(a, b)
    engine.hold(b, music=ToneSource([300], None))
    assert engine.core.bridges[a].is_held(engine.leg(b))
    engine.hold(b, False)
    assert not engine.core.bridges[a].is_held(engine.leg(b))
    engine.conference("room", music=lambda: ToneSource([350], None))
    conf = engine.join("room", c)
    engine.hold(c)
    assert conf.participants[c].held
    engine.mute(c)
    assert engine.leg(c).muted


async def test_legs_created_before_start_receive(peer: RawPeer) -> None:
    eng = MediaEngine(port_range=(30000, 60000), rtcp_interval=3600.0, io_mode="poll")
    leg_id, port = eng.create_leg()
    eng.set_remote(leg_id, "127.0.0.1", peer.port)
    await eng.start()
    try:
        for raw in udp_payloads(SIPP / "dtmf_2833_9.pcap"):
            peer.send(raw, port)
        ev = await next_event(eng, DigitReceived)
        assert isinstance(ev, DigitReceived) and ev.digit == "9"
        assert len(await peer.recv(3)) == 3
    finally:
        await eng.close()
    assert eng.ports.in_use == set()


async def test_an_engine_without_legs_ticks_quietly(engine: MediaEngine, caplog: pytest.LogCaptureFixture) -> None:
    ticker = engine.ticker
    while ticker.schedule is None or ticker.schedule.n < 5:
        await asyncio.sleep(0.02)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_idle_leg_is_reported(peer: RawPeer) -> None:
    eng = MediaEngine(port_range=(30000, 60000), rtcp_interval=3600.0, idle_timeout=0.2)
    await eng.start()
    try:
        leg_id, _ = eng.create_leg()
        ev = await next_event(eng, LegIdle)
        assert isinstance(ev, LegIdle) and ev.leg_id == leg_id and ev.idle_s >= 0.2
    finally:
        await eng.close()


async def test_rtcp_latches_and_close_sends_bye(engine: MediaEngine, peer: RawPeer) -> None:
    leg_id, port = engine.create_leg()
    engine.set_remote(leg_id, "127.0.0.1", 9)  # SDP says port 9 (discard); RTCP comes from the peer's socket
    peer.send(build_compound(ReceiverReport(0xABC)), port + 1)
    await asyncio.sleep(0.1)
    assert engine.leg(leg_id).remote_rtcp == peer.addr
    ssrc = engine.leg(leg_id).ssrc
    engine.close_leg(leg_id)
    loop = asyncio.get_running_loop()
    while True:
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(peer.sock, 2048), 5)
        if 200 <= data[1] <= 204:
            break
    packets = parse_compound(data)
    assert isinstance(packets[0], SenderReport) and packets[0].ssrc == ssrc  # it has been sending: SR
    assert packets[-1] == Bye((ssrc,))


class RaisingSource:
    def __init__(self, frames: int) -> None:
        self.left = frames

    def read(self) -> bytes | None:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("boom")
        return SILENCE

    def stop(self) -> None:
        pass


async def test_a_faulty_leg_is_closed_and_the_other_keeps_its_pacing(engine: MediaEngine, peer: RawPeer) -> None:
    victim = RawPeer()
    try:
        bad, bad_port = engine.create_leg()  # first: it comes before the good leg in every phase of the tick
        good, _ = engine.create_leg()
        engine.set_remote(good, "127.0.0.1", peer.port)
        engine.set_remote(bad, "127.0.0.1", victim.port)
        engine.set_source(good, ToneSource([1000], None))
        engine.set_source(bad, RaisingSource(3))
        ev = await next_event(engine, LegFailed)
        assert ev == LegFailed(bad, "RuntimeError: boom")
        assert bad not in engine.core.legs and bad_port not in engine.ports.in_use
        over = engine.ticker.overruns
        pkts = await peer.recv(10)  # one packet per tick after the fault: it did not stop the tick
        steps = [(b.timestamp - a.timestamp) // 160 for a, b in zip(pkts, pkts[1:], strict=False)]
        assert sum(steps) - len(steps) <= engine.ticker.overruns - over
    finally:
        victim.close()
