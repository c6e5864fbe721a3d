"""DTMF: RFC 4733 telephone-event payloads, receive with de-duplication, paced send, and an in-band detector.

Receive (RFC 4733 §2.5.2): all packets of one event share the RTP timestamp of the event start; the event is
reported once, on its first end packet (the two retransmitted end packets and any retransmitted progress packets
are ignored). If a new event starts before the previous one ended (its end packets were lost), the previous one
is reported with the last duration seen; so is one that gets no packet for 200 ms (all three end packets lost).
Recent events' arrival windows are kept so that the leg can drop an in-band detection of the same key.

Send (RFC 4733 §2.5.1): one packet per 20 ms tick, all with the timestamp of the event start, the marker bit on
the first packet only, the duration growing by 160 per packet, then three end packets with the final duration.
An event relayed from another leg is sent the same way, live: it runs until the source event has ended.

In-band detection (ITU-T Q.23 frequencies, Q.24-style level and twist checks): the tone power at each of the
8 DTMF frequencies, measured on each 20 ms frame. A Goertzel filter's output power equals the squared DFT
magnitude at its frequency over the block; numpy computes all 8 in one matrix product, which is cheaper in
Python than running the recurrence per sample.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from callplane.core.errors import MediaError
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE

EVENTS = "0123456789*#ABCD"
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
_TE = struct.Struct("!BBH")

__all__ = [
    "COLS",
    "EVENTS",
    "ROWS",
    "DtmfReceiver",
    "DtmfSender",
    "InbandDtmfDetector",
    "ReceivedDigit",
    "ReceiverEvent",
    "TelephoneEvent",
    "ToneStarted",
    "digit_for_event",
    "event_for_digit",
]


def event_for_digit(digit: str) -> int:
    i = EVENTS.find(digit.upper())
    if i < 0 or len(digit) != 1:
        raise MediaError(f"not a DTMF digit: {digit!r}")
    return i


def digit_for_event(event: int) -> str | None:
    return EVENTS[event] if 0 <= event < len(EVENTS) else None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 §2.3 payload: event code, end bit, volume (dBm0 below zero, 0..63), duration in timestamp units."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise ValueError("telephone-event payload shorter than 4 bytes")
        ev, flags, dur = _TE.unpack_from(payload)
        return cls(ev, bool(flags & 0x80), flags & 0x3F, dur)

    def __bytes__(self) -> bytes:
        return _TE.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration)


@dataclass(frozen=True, slots=True)
class ToneStarted:
    """The first packet of a new RFC 4733 digit event arrived (a bridge starts relaying it)."""

    digit: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class ReceivedDigit:
    digit: str
    duration_ms: int
    timestamp: int


ReceiverEvent = ToneStarted | ReceivedDigit


class DtmfReceiver:
    """De-duplicates RFC 4733 packets into digits. Feed each telephone-event packet; returns what happened.

    An event whose end packets are all lost is reported (with the last duration seen) when the next event starts,
    or by :meth:`poll` once ``end_timeout`` seconds pass without a packet of it (a sender updates a running
    event at least every 50 ms or so, so 200 ms of silence means its end was lost). Late packets of an event
    already reported are ignored.
    """

    def __init__(self, clock_rate: int = SAMPLE_RATE, end_timeout: float = 0.2) -> None:
        self._rate = clock_rate
        self.end_timeout = end_timeout
        self._current: tuple[int, int, int] | None = None  # (timestamp, event, last duration)
        self.deadline: float | None = None  # when the current event ends unless another packet of it comes
        self._ended: int | None = None  # timestamp of the last event already reported
        # (digit, first packet at, reported at or None) of recent events, for in-band de-duplication.
        self._recent: deque[tuple[str, float, float | None]] = deque(maxlen=8)

    @property
    def active(self) -> bool:
        """An event has started and is not reported yet (:meth:`poll` has work)."""
        return self._current is not None

    def feed(self, timestamp: int, payload: bytes, now: float) -> list[ReceiverEvent]:
        te = TelephoneEvent.parse(payload)
        out: list[ReceiverEvent] = []
        if timestamp == self._ended:
            return out  # retransmitted end packets of an event already reported
        cur = self._current
        if cur is not None and cur[0] != timestamp:
            out.extend(self._report(cur, now))  # the previous event's end packets never came
            cur = None
        if cur is None:
            digit = digit_for_event(te.event)
            if digit is not None:
                out.append(ToneStarted(digit, timestamp))
                self._recent.append((digit, now, None))
        if te.end:
            out.extend(self._report((timestamp, te.event, te.duration), now))
        else:
            self._current = (timestamp, te.event, te.duration)
            self.deadline = now + self.end_timeout
        return out

    def poll(self, now: float) -> list[ReceiverEvent]:
        """The current event, if no packet of it came for ``end_timeout`` seconds (all its end packets lost)."""
        cur = self._current
        if cur is None or self.deadline is None or now < self.deadline:
            return []
        return list(self._report(cur, now))

    def covers(self, digit: str, start: float, end: float) -> bool:
        """Whether an RFC 4733 event of ``digit`` was under way at some point of [start, end] (arrival times)."""
        return any(d == digit and first <= end and (last is None or last >= start) for d, first, last in self._recent)

    def _report(self, ev: tuple[int, int, int], now: float) -> list[ReceivedDigit]:
        self._current = self.deadline = None
        self._ended = ev[0]
        digit = digit_for_event(ev[1])
        if digit is None:
            return []
        if self._recent and self._recent[-1][0] == digit and self._recent[-1][2] is None:
            self._recent[-1] = (digit, self._recent[-1][1], now)
        return [ReceivedDigit(digit, round(ev[2] * 1000 / self._rate), ev[0])]


@dataclass(frozen=True, slots=True)
class EventPacket:
    """What the leg puts on the wire for one tick of a telephone event."""

    payload: bytes
    marker: bool
    timestamp: int


@dataclass(slots=True)
class _Tone:
    event: int
    ticks: int | None  # length in ticks; None while a relayed event is still going on at its source


class DtmfSender:
    """Queues digits and yields one telephone-event packet per tick.

    ``w`` in the digit string is a 500 ms pause (Twilio/Restcomm ``sendDigits``). Between digits the sender
    leaves ``gap_ms`` of ordinary audio, during which :meth:`next_packet` returns ``None``.

    A bridge relays the other leg's events with :meth:`begin` and :meth:`end`: the event goes out live, with this
    sender's own timestamps, and lasts until the source's event has ended (at least as long as it did there).
    """

    def __init__(self, tone_ms: int = 100, gap_ms: int = 60, volume: int = 10) -> None:
        self.tone_ticks = max(1, tone_ms // 20)
        self.gap_ticks = max(0, gap_ms // 20)
        self.volume = volume
        self._queue: deque[_Tone | None] = deque()  # None: a 500 ms pause
        self._tone: _Tone | None = None
        self._event_ts = 0
        self._tick = 0  # ticks into the current event (0 = first packet)
        self._pause = 0
        self._sending = ""
        self.open_relays = 0  # relayed events begun whose end is not known yet

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._tone is not None or self._pause > 0

    def queue(self, digits: str) -> None:
        tones = [None if d in "wW" else _Tone(event_for_digit(d), self.tone_ticks) for d in digits]
        self._queue.extend(tones)  # all validated before any is queued
        self._sending += digits

    def begin(self, digit: str) -> None:
        """Start relaying an event whose end is not known yet."""
        self._queue.append(_Tone(event_for_digit(digit), None))
        self.open_relays += 1

    def end(self, digit: str, duration_ms: int) -> None:
        """The relayed event ended at its source after ``duration_ms``; one that never began is sent whole."""
        event, ticks = event_for_digit(digit), max(1, -(-duration_ms // 20))
        for tone in (self._tone, *self._queue):
            if tone is not None and tone.ticks is None and tone.event == event:
                tone.ticks = max(ticks, self._tick) if tone is self._tone else ticks
                self.open_relays -= 1
                return
        self._queue.append(_Tone(event, ticks))

    def end_all(self) -> None:
        """End every relayed event still open (the bridge is going away): each lasts what it has sent so far."""
        for tone in (self._tone, *self._queue):
            if tone is not None and tone.ticks is None:
                tone.ticks = max(1, self._tick) if tone is self._tone else 1
        self.open_relays = 0

    def finish(self, event: int, timestamp: int, duration: int) -> None:
        """Send the three end packets of an event that went out elsewhere (a relay passed its packets through
        under our SSRC and sequence numbers) and stopped before its end: ``timestamp`` and ``duration`` as sent."""
        ticks = max(1, duration // 160)
        self._tone, self._event_ts, self._tick = _Tone(event, ticks), timestamp, ticks

    def next_packet(self, timestamp: int) -> EventPacket | None:
        """Called once per tick with the leg's RTP timestamp for this tick; ``None`` means send audio."""
        tone = self._tone
        if tone is None:
            if self._pause > 0:
                self._pause -= 1
                return None
            if not self._queue:
                return None
            tone = self._queue.popleft()
            if tone is None:
                self._pause = 25 - 1
                return None
            self._tone, self._event_ts, self._tick = tone, timestamp, 0
        n = self._tick
        self._tick += 1
        if tone.ticks is None or n < tone.ticks:
            dur, end = (n + 1) * 160, False
        else:
            dur, end = tone.ticks * 160, True
        payload = bytes(TelephoneEvent(tone.event, end, self.volume, min(dur, 0xFFFF)))
        pkt = EventPacket(payload, n == 0, self._event_ts)
        if tone.ticks is not None and n >= tone.ticks + 2:  # the third end packet
            self._tone = None
            self._pause = self.gap_ticks if self._queue else 0
        return pkt

    def take_finished(self) -> str | None:
        """The digits string once everything queued has been sent (then resets), else ``None``."""
        if self.busy or not self._sending:
            return None
        s, self._sending = self._sending, ""
        return s


class InbandDtmfDetector:
    """Detects DTMF tones in 20 ms PCM frames (a :class:`~callplane.media.sources.Sink`).

    A frame holds a digit when the strongest row and column tones are both well above the others, together carry
    most of the frame's energy, the level is above ``min_level`` and the twist is within limits. A digit is
    reported when it ends, if it lasted at least ``min_frames`` frames (2 = 40 ms).
    """

    def __init__(self, min_frames: int = 2, min_level_dbfs: float = -36.0) -> None:
        n = np.arange(FRAME_SAMPLES, dtype=np.float64)
        freqs = np.array(ROWS + COLS)
        ang = 2 * math.pi * np.outer(freqs, n) / SAMPLE_RATE
        self._basis = np.concatenate([np.cos(ang), np.sin(ang)])  # (16, 160)
        self.min_frames = min_frames
        # Power of a full-scale sine at one frequency over a 160-sample block is (N*A/2)^2.
        self._min_power = (FRAME_SAMPLES * 32767 / 2 * 10 ** (min_level_dbfs / 20)) ** 2
        self._digit: str | None = None
        self._frames = 0
        self.detected: list[tuple[str, int]] = []  # (digit, duration_ms), drained by the leg

    def classify(self, frame: bytes) -> str | None:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        proj = self._basis @ x
        power = proj[:8] ** 2 + proj[8:] ** 2
        rows, cols = power[:4], power[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        pr, pc = rows[r], cols[c]
        if pr < self._min_power or pc < self._min_power:
            return None
        # Twist: column (high group) may be up to 8 dB above the row, row up to 4 dB above the column.
        if pc > pr * 6.3 or pr > pc * 2.5:
            return None
        # Each peak at least 8 dB above the other tones of its group.
        if np.sum(rows > pr / 6.3) > 1 or np.sum(cols > pc / 6.3) > 1:
            return None
        # The two tones carry most of the energy (speech and noise spread it out). Parseval: sum x^2 = |X|^2/N
        # summed over bins; a pure sine's two DFT bins give 2*(N*A/2)^2/N = N*A^2/2 = sum x^2.
        energy = float(x @ x)
        if (pr + pc) * 2 / FRAME_SAMPLES < 0.6 * energy:
            return None
        return KEYPAD[r][c]

    def write(self, frame: bytes, now: float) -> None:
        digit = self.classify(frame)
        if digit == self._digit:
            if digit is not None:
                self._frames += 1
            return
        self._finish()
        self._digit = digit
        self._frames = 1 if digit is not None else 0

    def _finish(self) -> None:
        if self._digit is not None and self._frames >= self.min_frames:
            self.detected.append((self._digit, self._frames * 20))
