from __future__ import annotations

import numpy as np
import pytest

from callplane.core.errors import MediaError
from callplane.media import g711
from callplane.media.dtmf import (
    COLS,
    KEYPAD,
    ROWS,
    DtmfReceiver,
    DtmfSender,
    InbandDtmfDetector,
    ReceivedDigit,
    ReceiverEvent,
    TelephoneEvent,
    ToneStarted,
)
from callplane.media.rtp import RtpPacket
from callplane.media.sources import FRAME_BYTES, ToneSource, tone_pcm
from tests.media.pcapfile import SIPP, udp_payloads

PCAPS = {"0": "0", "1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "7", "8": "8", "9": "9"}
PCAPS.update({"#": "pound", "*": "star"})


@pytest.mark.parametrize("digit", sorted(PCAPS))
def test_sipp_rfc2833_captures_give_one_digit(digit: str) -> None:
    rx = DtmfReceiver()
    got: list[ReceiverEvent] = []
    for i, raw in enumerate(udp_payloads(SIPP / f"dtmf_2833_{PCAPS[digit]}.pcap")):
        p = RtpPacket.parse(raw)
        assert p.payload_type == 101
        got += rx.feed(p.timestamp, p.payload, i * 0.02)
    # One start and one digit: the three end packets are reported once.
    assert [type(g) for g in got] == [ToneStarted, ReceivedDigit]
    assert got[0].digit == got[1].digit == digit
    assert isinstance(got[1], ReceivedDigit) and got[1].duration_ms > 0
    assert not rx.active and rx.poll(10.0) == []


def te(event: int, end: bool, duration: int) -> bytes:
    return bytes(TelephoneEvent(event, end, 10, duration))


def test_receiver_handles_lost_end_and_retransmits() -> None:
    rx = DtmfReceiver()
    assert rx.feed(1000, te(5, False, 160), 0.0) == [ToneStarted("5", 1000)]
    assert rx.feed(1000, te(5, False, 320), 0.02) == []
    # The next event starts without the end of "5" having arrived: "5" is reported with its last duration.
    assert rx.feed(3000, te(11, False, 160), 0.1) == [ReceivedDigit("5", 40, 1000), ToneStarted("#", 3000)]
    assert rx.feed(3000, te(11, True, 800), 0.18) == [ReceivedDigit("#", 100, 3000)]
    assert rx.feed(3000, te(11, True, 800), 0.2) == []
    assert rx.feed(3000, te(11, False, 480), 0.22) == []  # late retransmit of a progress packet


def test_receiver_ends_a_digit_whose_end_packets_are_all_lost() -> None:
    rx = DtmfReceiver()
    assert rx.feed(4000, te(7, False, 160), 1.0) == [ToneStarted("7", 4000)]
    assert rx.feed(4000, te(7, False, 320), 1.02) == []
    assert rx.feed(4000, te(7, False, 480), 1.04) == []
    assert rx.active and rx.deadline == 1.04 + 0.2
    assert rx.poll(1.239) == []  # 199 ms since the last packet
    assert rx.poll(1.04 + 0.2) == [ReceivedDigit("7", 60, 4000)]  # 200 ms: reported once, with the duration seen
    assert rx.deadline is None
    assert rx.poll(1.5) == [] and not rx.active
    assert rx.feed(4000, te(7, True, 800), 1.3) == []  # the end packets turn up after all: not a second digit
    assert rx.feed(5000, te(7, True, 800), 2.0) == [ToneStarted("7", 5000), ReceivedDigit("7", 100, 5000)]


def test_receiver_end_timeout_restarts_with_every_packet() -> None:
    rx = DtmfReceiver(end_timeout=0.1)
    rx.feed(0, te(1, False, 160), 0.0)
    for k in range(1, 20):  # a long press, an update every 50 ms
        assert rx.poll(k * 0.05) == []
        rx.feed(0, te(1, False, 160 + 400 * k), k * 0.05)
    assert rx.deadline == 19 * 0.05 + 0.1
    assert rx.poll(1.049) == []
    assert rx.poll(19 * 0.05 + 0.1) == [ReceivedDigit("1", 970, 0)]


def test_receiver_covers_the_arrival_window_of_each_event() -> None:
    rx = DtmfReceiver()
    assert not rx.covers("5", 0.0, 10.0)  # no RFC 4733 seen yet
    rx.feed(0, te(5, False, 160), 1.0)
    assert rx.covers("5", 0.9, 1.0) and rx.covers("5", 5.0, 6.0)  # still going on
    assert not rx.covers("6", 0.0, 10.0)
    rx.feed(0, te(5, True, 800), 1.1)
    assert rx.covers("5", 1.05, 1.2) and rx.covers("5", 0.0, 1.0)
    assert not rx.covers("5", 1.11, 2.0) and not rx.covers("5", 0.0, 0.99)


def test_sender_relays_an_event_live_with_its_own_timestamps() -> None:
    tx = DtmfSender()
    assert tx.open_relays == 0
    tx.begin("9")
    assert tx.open_relays == 1
    pkts = [tx.next_packet(7000 + 160 * k) for k in range(3)]
    tx.end("9", 100)  # ended at the source after 100 ms: five ticks in all
    assert tx.open_relays == 0
    pkts += [tx.next_packet(7000 + 160 * k) for k in range(3, 10)]
    got = [(TelephoneEvent.parse(p.payload), p.marker, p.timestamp) if p else None for p in pkts]
    assert got == [(TelephoneEvent(9, False, 10, 160 * k), k == 1, 7000) for k in range(1, 6)] + [
        (TelephoneEvent(9, True, 10, 800), False, 7000)
    ] * 3 + [None, None]
    assert tx.take_finished() is None and not tx.busy  # relayed events are not DigitsSent


def test_sender_relay_end_never_shortens_what_was_sent() -> None:
    tx = DtmfSender()
    tx.begin("1")
    for k in range(4):
        tx.next_packet(k * 160)
    tx.end("1", 20)  # the end was heard late: the event already lasted 4 ticks here
    rest = [TelephoneEvent.parse(p.payload) for k in range(4, 7) if (p := tx.next_packet(k * 160))]
    assert rest == [TelephoneEvent(1, True, 10, 640)] * 3


def test_sender_relay_without_a_start_and_end_all() -> None:
    tx = DtmfSender()
    tx.end("#", 50)  # only the end packets came through: sent whole, 3 ticks
    got = [TelephoneEvent.parse(p.payload) for k in range(6) if (p := tx.next_packet(k))]
    assert (
        got
        == [TelephoneEvent(11, False, 10, 160), TelephoneEvent(11, False, 10, 320)]
        + [TelephoneEvent(11, False, 10, 480)]
        + [TelephoneEvent(11, True, 10, 480)] * 3
    )
    tx.begin("2")
    tx.next_packet(0)
    tx.next_packet(160)
    tx.end_all()  # the bridge went away mid-digit: end with what was sent
    assert tx.open_relays == 0
    got = [TelephoneEvent.parse(p.payload) for k in range(5) if (p := tx.next_packet(k))]
    assert got == [TelephoneEvent(2, True, 10, 320)] * 3


def test_sender_exact_packets() -> None:
    tx = DtmfSender(tone_ms=100, gap_ms=40)
    tx.queue("1#")
    pkts = []
    ts = 5000
    for _ in range(30):
        p = tx.next_packet(ts)
        pkts.append(p)
        ts += 160
    events = [(TelephoneEvent.parse(p.payload), p.marker, p.timestamp) if p else None for p in pkts]
    first = events[:8]
    assert first == [
        (TelephoneEvent(1, False, 10, 160), True, 5000),
        (TelephoneEvent(1, False, 10, 320), False, 5000),
        (TelephoneEvent(1, False, 10, 480), False, 5000),
        (TelephoneEvent(1, False, 10, 640), False, 5000),
        (TelephoneEvent(1, False, 10, 800), False, 5000),
        (TelephoneEvent(1, True, 10, 800), False, 5000),
        (TelephoneEvent(1, True, 10, 800), False, 5000),
        (TelephoneEvent(1, True, 10, 800), False, 5000),
    ]
    assert events[8:10] == [None, None]  # 40 ms of audio between digits
    second = events[10:18]
    assert second[0] == (TelephoneEvent(11, False, 10, 160), True, 5000 + 10 * 160)
    assert [e[0].end for e in second if e] == [False] * 5 + [True] * 3
    assert {e[2] for e in second if e} == {5000 + 10 * 160}
    assert events[18:] == [None] * 12
    assert tx.take_finished() == "1#"
    assert not tx.busy


def test_sender_pause_and_validation() -> None:
    tx = DtmfSender(tone_ms=40)
    tx.queue("w1")
    out = [tx.next_packet(i * 160) for i in range(30)]
    assert out[:25] == [None] * 25
    assert out[25] is not None and out[25].marker and out[25].timestamp == 25 * 160
    with pytest.raises(MediaError):
        tx.queue("x")


def _frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_goertzel_detects_every_key_through_mu_law(digit: str) -> None:
    r = next(i for i, row in enumerate(KEYPAD) if digit in row)
    c = KEYPAD[r].index(digit)
    pcm = tone_pcm([ROWS[r], COLS[c]], 0.1, amplitude=0.25) + bytes(FRAME_BYTES * 3)
    pcm = g711.decode(g711.encode(pcm, g711.PCMU), g711.PCMU)
    det = InbandDtmfDetector()
    for i, fr in enumerate(_frames(pcm)):
        det.write(fr, i * 0.02)
    assert det.detected == [(digit, 100)]


def test_goertzel_rejects_short_weak_single_and_twisted_tones() -> None:
    det = InbandDtmfDetector()
    cases = [
        tone_pcm([697, 1209], 0.02, 0.25),  # 20 ms: too short
        tone_pcm([697, 1209], 0.1, 0.001),  # -60 dBFS: too weak
        tone_pcm([697], 0.1, 0.25),  # only one tone
        tone_pcm([697], 0.1, 0.25) + b"",  # same
        (np.frombuffer(tone_pcm([697], 0.1, 0.3), "<i2") // 1 + np.frombuffer(tone_pcm([1209], 0.1, 0.02), "<i2"))
        .astype("<i2")
        .tobytes(),  # row 23 dB above column: reverse twist
        tone_pcm([440, 480], 0.2, 0.25),  # ringback
    ]
    for pcm in cases:
        for fr in _frames(pcm + bytes(FRAME_BYTES * 2)):
            det.write(fr, 0.0)
    assert det.detected == []


def test_goertzel_ignores_speech_like_noise_and_sees_digits_in_a_stream() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 3000, 8000)).astype("<i2").tobytes()
    det = InbandDtmfDetector()
    tones = ToneSource([852, 1477], 0.06, 0.25)
    stream = noise + b"".join(iter(tones.read, None)) + noise
    for fr in _frames(stream):
        det.write(fr, 0.0)
    assert det.detected == [("9", 60)]
