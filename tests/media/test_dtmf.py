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
    TelephoneEvent,
)
from callplane.media.rtp import RtpPacket
from callplane.media.sources import FRAME_BYTES, ToneSource, tone_pcm
from tests.media.pcapfile import SIPP, udp_payloads

PCAPS = {"0": "0", "1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "7", "8": "8", "9": "9"}
PCAPS.update({"#": "pound", "*": "star"})


@pytest.mark.parametrize("digit", sorted(PCAPS))
def test_sipp_rfc2833_captures_give_one_digit(digit: str) -> None:
    rx = DtmfReceiver()
    got: list[ReceivedDigit] = []
    for raw in udp_payloads(SIPP / f"dtmf_2833_{PCAPS[digit]}.pcap"):
        p = RtpPacket.parse(raw)
        assert p.payload_type == 101
        got += rx.feed(p.timestamp, p.payload)
    assert [g.digit for g in got] == [digit]  # the three end packets are reported once
    assert got[0].duration_ms > 0


def test_receiver_handles_lost_end_and_retransmits() -> None:
    rx = DtmfReceiver()
    assert rx.feed(1000, bytes(TelephoneEvent(5, False, 10, 160))) == []
    assert rx.feed(1000, bytes(TelephoneEvent(5, False, 10, 320))) == []
    # The next event starts without the end of "5" having arrived: "5" is reported with its last duration.
    assert rx.feed(3000, bytes(TelephoneEvent(11, False, 10, 160))) == [ReceivedDigit("5", 40, 1000)]
    assert rx.feed(3000, bytes(TelephoneEvent(11, True, 10, 800))) == [ReceivedDigit("#", 100, 3000)]
    assert rx.feed(3000, bytes(TelephoneEvent(11, True, 10, 800))) == []
    assert rx.feed(3000, bytes(TelephoneEvent(11, False, 10, 480))) == []  # late retransmit of a progress packet


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
