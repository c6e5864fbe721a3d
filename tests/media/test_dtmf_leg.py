"""DTMF through one leg in virtual time: the end timeout, and one report for a digit sent both ways."""

from __future__ import annotations

from callplane.core.ids import IdSource
from callplane.media import g711
from callplane.media.dtmf import COLS, ROWS, TelephoneEvent
from callplane.media.events import DigitReceived
from callplane.media.leg import RtpLeg
from callplane.media.rtp import build
from callplane.media.sources import FRAME_BYTES, tone_pcm

PEER = ("127.0.0.1", 40000)


def make() -> RtpLeg:
    return RtpLeg("L1", IdSource(3), remote=PEER)


def te(event: int, end: bool, duration: int) -> bytes:
    return bytes(TelephoneEvent(event, end, 10, duration))


def digits(leg: RtpLeg) -> list[DigitReceived]:
    return [e for e in leg.events if isinstance(e, DigitReceived)]


def test_digit_with_all_end_packets_lost_is_reported_after_the_end_timeout() -> None:
    leg = make()
    for k in range(4):  # 80 ms of "3", then nothing: the three end packets were lost
        leg.receive_rtp(build(101, 10 + k, 8000, 7, te(3, False, 160 * (k + 1))), PEER, k * 0.02)
        leg.pull(k * 0.02)
    assert digits(leg) == []
    leg.pull(0.26 - 0.001)
    assert digits(leg) == []
    leg.pull(0.06 + 0.2)  # 200 ms after the last packet
    assert digits(leg) == [DigitReceived("L1", "3", 80, "rfc4733")]
    for k in range(3):  # the end packets arrive after all: still one digit
        leg.receive_rtp(build(101, 14 + k, 8000, 7, te(3, True, 800)), PEER, 0.3)
    leg.pull(0.6)
    assert digits(leg) == [DigitReceived("L1", "3", 80, "rfc4733")]


def _both_ways(leg: RtpLeg, digit_event: int, freqs: tuple[float, float], seq: int, rfc4733: bool) -> int:
    """A peer that plays the tone in its audio and (if ``rfc4733``) sends RFC 4733 events for it, as phones set to
    "DTMF: both" do: 100 ms of tone then 200 ms of silence, one audio packet per 20 ms, and the event packets
    beside them in the same stream (same SSRC, one sequence number space, so the audio has gaps). Returns the
    next sequence number; the peer's clock is the audio timestamp (20 ms per audio packet)."""
    pcm = tone_pcm(freqs, 0.1, 0.25) + bytes(FRAME_BYTES * 10)
    ts0 = 160 * seq
    for k in range(len(pcm) // FRAME_BYTES):
        t = (ts0 + 160 * k) / 8000
        frame = pcm[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
        leg.receive_rtp(build(0, seq, ts0 + 160 * k, 7, g711.encode(frame, 0)), PEER, t)
        seq += 1
        if rfc4733 and k < 8:
            end = k >= 5
            leg.receive_rtp(build(101, seq, ts0, 7, te(digit_event, end, 800 if end else 160 * (k + 1))), PEER, t)
            seq += 1
        leg.pull(t)
    return seq


def test_a_digit_sent_in_band_and_as_rfc4733_is_reported_once() -> None:
    leg = make()
    leg.enable_inband_dtmf()
    seq = _both_ways(leg, 5, (ROWS[1], COLS[1]), 0, rfc4733=True)
    seq = _both_ways(leg, 5, (ROWS[1], COLS[1]), seq, rfc4733=True)  # the same key again
    assert digits(leg) == [DigitReceived("L1", "5", 100, "rfc4733")] * 2
    # A digit that comes only as a tone (no event for it) is still reported in-band.
    _both_ways(leg, 9, (ROWS[2], COLS[2]), seq, rfc4733=False)
    assert digits(leg)[2:] == [DigitReceived("L1", "9", 100, "inband")]


def test_in_band_digits_of_a_peer_without_rfc4733_are_reported() -> None:
    leg = make()
    leg.enable_inband_dtmf()
    seq = _both_ways(leg, 5, (ROWS[1], COLS[1]), 0, rfc4733=False)
    _both_ways(leg, 5, (ROWS[1], COLS[1]), seq, rfc4733=False)
    assert digits(leg) == [DigitReceived("L1", "5", 100, "inband")] * 2
