"""A small reorder buffer for inbound audio, keyed by RTP sequence number (with 16-bit wraparound).

Theory of operation: packets are pushed as they arrive; the ticker pops one frame per 20 ms tick.

- The next expected sequence is played if present.
- If it is missing but later packets wait behind it, the buffer holds on until ``depth`` packets are queued or
  it has waited ``depth`` ticks; then the missing packet is declared lost and a concealment frame (silence) is
  played in its place, so a recording keeps its length.
- If nothing is queued at all, ``pop`` returns ``None`` (the peer sent nothing: hold, silence suppression, or our
  tick ran ahead of its packet) and the expected sequence stays where it is.
- Playout starts (and restarts after the queue ran dry) once ``prefill`` frames are queued, or after ``prefill``
  ticks: the frames held back absorb arrival jitter of up to ``prefill`` x 20 ms without gaps.
- A packet older than the next expected one (late) or already queued (duplicate) is dropped and counted.
- A jump of more than ``RESYNC_GAP`` sequence numbers (sender restarted) resynchronises.
- If the queue grows beyond ``capacity`` (the sender's clock runs fast, or a burst), the oldest is dropped.
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


class JitterBuffer:
    """Reorders a few packets; one :meth:`pop` per tick."""

    def __init__(self, depth: int = 3, capacity: int = 10, prefill: int = 2) -> None:
        self.depth = depth
        self.prefill = prefill
        self._filling = True
        self._fill_waited = 0
        self.capacity = max(capacity, depth)
        self.stats = JitterStats()
        self._frames: dict[int, bytes] = {}
        self._next: int | None = None
        self._waited = 0
        self._started = False

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, seq: int, frame: bytes) -> None:
        """Queue a decoded frame under its RTP sequence number (``b""``: the packet carried no audio)."""
        st = self.stats
        if self._next is None:
            self._next = seq
        d = seq_diff(seq, self._next)
        if not self._started and -RESYNC_GAP <= d < 0:
            self._next, d = seq, 0  # reordered before playout began: start from the earliest
        if d < -RESYNC_GAP or d > RESYNC_GAP:
            self._frames.clear()
            self._next = seq
            st.resyncs += 1
            d = 0
        if d < 0:
            st.late += 1
            return
        if seq in self._frames:
            st.duplicates += 1
            return
        st.pushed += 1
        self._frames[seq] = frame
        while len(self._frames) > self.capacity:
            st.overflow += 1
            self._skip()

    def pop(self) -> bytes | None:
        """The frame for this tick: audio, a concealment frame for a lost packet, or ``None`` if nothing came."""
        frames = self._frames
        self._started = True
        nxt = self._next
        while nxt is not None and frames.get(nxt) == b"":  # not audio: step over it
            del frames[nxt]
            nxt = self._next = (nxt + 1) & 0xFFFF
        if not frames or self._next is None:
            self.stats.underruns += 1
            self._filling = True
            self._fill_waited = 0
            return None
        if self._filling:
            if len(frames) < self.prefill and self._fill_waited < self.prefill:
                self._fill_waited += 1
                return None
            self._filling = False
        frame = frames.pop(self._next, None)
        if frame is not None:
            self._next = (self._next + 1) & 0xFFFF
            self._waited = 0
            self.stats.played += 1
            return frame
        if len(frames) >= self.depth or self._waited >= self.depth:
            self.stats.lost += 1
            self._next = (self._next + 1) & 0xFFFF
            self._waited = 0
            return SILENCE
        self._waited += 1
        return None

    def _skip(self) -> None:
        """Drop the oldest queued frame and move the play point past it."""
        assert self._next is not None
        nxt = self._next
        oldest = min(self._frames, key=lambda s: seq_diff(s, nxt))
        del self._frames[oldest]
        self._next = (oldest + 1) & 0xFFFF
        self._waited = 0
