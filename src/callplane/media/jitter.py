"""A small adaptive reorder buffer for inbound audio, keyed by RTP sequence number (with 16-bit wraparound).

Theory of operation: packets are pushed as they arrive; the ticker pops one frame per 20 ms tick.

- The next expected sequence is played if present.
- If it is missing but later packets wait behind it, the buffer holds on until ``depth`` packets are queued or
  it has waited ``depth`` ticks; then the missing packet is declared lost and a concealment frame (silence) is
  played in its place, so a recording keeps its length.
- If nothing is queued at all, ``pop`` returns ``None`` (the peer sent nothing: hold, silence suppression, a loss
  run, or our tick ran ahead of its packet) and the buffer refills.
- Playout starts (and restarts after the queue ran dry) once ``prefill`` frames are queued, or after ``prefill``
  ticks: the frames held back absorb arrival jitter of up to ``prefill`` x 20 ms without gaps. Packets reordered
  before playout began are kept. When a loss run longer than ``depth`` emptied the queue, playout restarts from
  the oldest frame queued: the lost packets are not played as concealment (those ticks already went by).
- Latency only grows through waiting (a loss, a reorder, a refill) or missed pops (a stalled ticker); it is
  brought back down: when the queue has held more than ``prefill`` frames at each of ``shrink_window`` pops in a
  row, one frame is dropped, and so on every ``shrink_window`` pops until it is back at the target.
- A packet older than the next expected one (late) or already queued (duplicate) is dropped and counted.
- A jump of more than ``RESYNC_GAP`` sequence numbers (sender restarted) resynchronises; so does :meth:`reset`,
  which the leg calls when the sender's SSRC changes.
- If more than ``capacity`` frames are queued (a burst, a stalled ticker, a sender whose clock runs fast), the
  play point moves on: over the missing packets it waits for if there are any (counted as lost: they would have
  been played as concealment), else over the oldest frame (counted as overflow).
- A sequence number taken by a packet that carries no audio (an RFC 4733 event in the same stream) is pushed
  with an empty frame: playout steps over it without spending a tick or playing a concealment frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from callplane.media.rtp import seq_diff
from callplane.media.sources import SILENCE

RESYNC_GAP = 100

__all__ = ["JitterBuffer", "JitterStats"]


@dataclass(slots=True)
class JitterStats:
    pushed: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    overflow: int = 0
    underruns: int = 0
    resyncs: int = 0
    shrunk: int = 0  # frames dropped to bring the latency back to the target


class JitterBuffer:
    """Reorders a few packets; one :meth:`pop` per tick."""

    def __init__(self, depth: int = 3, capacity: int = 10, prefill: int = 2, shrink_window: int = 25) -> None:
        self.depth = depth
        self.prefill = prefill
        self.capacity = max(capacity, depth, prefill)
        self.shrink_window = shrink_window
        self.stats = JitterStats()
        self._frames: dict[int, bytes] = {}
        self._not_audio: set[int] = set()
        self._next: int | None = None
        self._waited = 0
        self._started = False  # playout has begun (a frame or a concealment frame went out)
        self._filling = True
        self._fill_waited = 0
        self._above = 0  # pops in a row that found more than ``prefill`` frames queued

    def __len__(self) -> int:
        return len(self._frames)

    def reset(self) -> None:
        """Forget everything queued and start afresh with the next packet (a new sender)."""
        self._frames.clear()
        self._not_audio.clear()
        self._next = None
        self._waited = 0
        self._started = False
        self._filling = True
        self._fill_waited = 0
        self._above = 0

    def push(self, seq: int, frame: bytes) -> None:
        """Queue a decoded frame under its RTP sequence number (``b""``: the packet carried no audio)."""
        st = self.stats
        if self._next is None:
            self._next = seq
        d = seq_diff(seq, self._next)
        if d < -RESYNC_GAP or d > RESYNC_GAP:
            self.reset()
            self._next = seq
            st.resyncs += 1
            d = 0
        elif d < 0 and not self._started:
            self._next, d = seq, 0  # reordered before playout began: start from the earliest
        if d < 0:
            st.late += 1
            return
        if seq in self._frames or seq in self._not_audio:
            st.duplicates += 1
            return
        if not frame:
            self._not_audio.add(seq)
        else:
            st.pushed += 1
            self._frames[seq] = frame
        if len(self._frames) > self.capacity:
            self._overflow()

    def pop(self) -> bytes | None:
        """The frame for this tick: audio, a concealment frame for a lost packet, or ``None`` if nothing came."""
        frames = self._frames
        nxt = self._next
        if self._not_audio and nxt is not None:
            while nxt in self._not_audio:
                self._not_audio.discard(nxt)
                nxt = self._next = (nxt + 1) & 0xFFFF
        if not frames or nxt is None:
            self.stats.underruns += 1
            self._filling = True
            self._fill_waited = 0
            self._above = 0
            return None
        if self._filling:
            if len(frames) < self.prefill and self._fill_waited < self.prefill:
                self._fill_waited += 1
                return None
            self._filling = False
            if nxt not in frames:
                base = nxt
                oldest = min(frames, key=lambda s: seq_diff(s, base))
                if not self._started or seq_diff(oldest, base) > self.depth:
                    self._step_to(oldest, lost=self._started)  # a loss run, not a reorder: start past it
        self._started = True
        if len(frames) > self.prefill:
            self._above += 1
            if self._above >= self.shrink_window:
                self._shrink()
        else:
            self._above = 0
        nxt = self._next
        assert nxt is not None
        frame = frames.pop(nxt, None)
        if frame is not None:
            self._next = (nxt + 1) & 0xFFFF
            self._waited = 0
            self.stats.played += 1
            return frame
        if len(frames) >= self.depth or self._waited >= self.depth:
            self.stats.lost += 1
            self._next = (nxt + 1) & 0xFFFF
            self._waited = 0
            return SILENCE
        self._waited += 1
        return None

    def _shrink(self) -> None:
        """The queue stayed above the target for a whole window: drop the frame about to play."""
        self._above = 0
        nxt = self._next
        if nxt is not None and nxt in self._frames:
            del self._frames[nxt]
            self._next = (nxt + 1) & 0xFFFF
            self.stats.shrunk += 1

    def _overflow(self) -> None:
        """More than ``capacity`` frames queued: skip the missing packets the play point waits for, if any, else
        drop the oldest frame."""
        nxt = self._next
        assert nxt is not None
        if nxt in self._frames:
            del self._frames[nxt]
            self.stats.overflow += 1
            self._next = (nxt + 1) & 0xFFFF
            self._waited = 0
        else:
            self._step_to(min(self._frames, key=lambda s: seq_diff(s, nxt)), lost=True)

    def _step_to(self, seq: int, *, lost: bool) -> None:
        """Move the play point forward to ``seq``, counting the missing audio packets skipped as lost."""
        nxt = self._next
        assert nxt is not None
        while nxt != seq:
            if nxt in self._not_audio:
                self._not_audio.discard(nxt)
            elif lost:
                self.stats.lost += 1
            nxt = (nxt + 1) & 0xFFFF
        self._next = seq
        self._waited = 0
