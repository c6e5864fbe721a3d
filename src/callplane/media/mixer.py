"""Conference mixing (mix-minus) on the shared tick, with numpy.

Each tick: the frames heard from every contributing participant (not muted, not held, something arrived) are
stacked into a k x 160 int32 matrix; the total is summed once and each participant gets ``total - own``
clipped to 16 bits, so everyone hears everyone but themselves. Beeps (join/leave) are added to everyone's mix.
A participant who is alone hears ``music`` (hold music) instead; a held participant hears the music and is
neither heard nor hears the others.

The conference's own sources (music, beeps) are nobody's leg: one that raises or returns a frame that is not
320 bytes is logged and dropped (broken music is not played again), and every participant goes on hearing the
others. Only a fault in the mixing itself ends the participants' legs (see :mod:`callplane.media.core`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from callplane.media.leg import RtpLeg
from callplane.media.sources import FRAME_BYTES, FRAME_SAMPLES, SILENCE, Source, ToneSource

__all__ = ["Conference", "Participant", "beep"]

log = logging.getLogger(__name__)
_BROKEN = b""  # what _frame_of returns for a source that failed


def beep() -> ToneSource:
    """The join/leave beep: 1 kHz, 150 ms."""
    return ToneSource([1000.0], 0.15, amplitude=0.25)


@dataclass(slots=True)
class Participant:
    leg: RtpLeg
    muted: bool = False
    held: bool = False


class Conference:
    """Mix-minus for N legs. ``music`` makes the hold-music source (called when one is needed)."""

    def __init__(
        self,
        name: str,
        *,
        music: Callable[[], Source] | None = None,
        beep_factory: Callable[[], Source] | None = beep,
    ) -> None:
        self.name = name
        self.participants: dict[str, Participant] = {}
        self._music_factory = music
        self._music: Source | None = None
        self._beep_factory = beep_factory
        self._overlays: list[Source] = []
        self.source_faults = 0

    def __len__(self) -> int:
        return len(self.participants)

    def join(self, leg: RtpLeg, *, muted: bool = False, beep: bool = True) -> None:
        self.participants[leg.leg_id] = Participant(leg, muted)
        leg.attached = True
        if beep:
            self._beep()

    def leave(self, leg: RtpLeg, *, beep: bool = True) -> None:
        if self.participants.pop(leg.leg_id, None) is None:
            return
        leg.attached = False
        leg.feed = None
        if beep:
            self._beep()

    def mute(self, leg: RtpLeg, muted: bool = True) -> None:
        self.participants[leg.leg_id].muted = muted

    def hold(self, leg: RtpLeg, held: bool = True) -> None:
        self.participants[leg.leg_id].held = held

    def _beep(self) -> None:
        if self._beep_factory is not None:
            self._overlays.append(self._beep_factory())

    def _frame_of(self, src: Source, what: str) -> bytes | None:
        """The next frame of ``src``, ``None`` when it finished, or ``_BROKEN`` (empty) when it raised or gave a
        frame of the wrong length (logged)."""
        try:
            frame = src.read()
        except Exception:
            log.exception("conference %s: the %s failed and is dropped", self.name, what)
            self.source_faults += 1
            return _BROKEN
        if frame is not None and len(frame) != FRAME_BYTES:
            log.error("conference %s: the %s gave a %d-byte frame and is dropped", self.name, what, len(frame))
            self.source_faults += 1
            return _BROKEN
        return frame

    def _music_frame(self) -> bytes:
        factory = self._music_factory
        if factory is None:
            return SILENCE
        for _ in range(2):  # the current music, then (once it finishes) a fresh one from the top: a loop
            if self._music is None:
                try:
                    self._music = factory()
                except Exception:
                    log.exception("conference %s: the music could not be started and is dropped", self.name)
                    self.source_faults += 1
                    self._music_factory = None
                    return SILENCE
            frame = self._frame_of(self._music, "music")
            if frame == _BROKEN:
                self._music_factory = self._music = None
                return SILENCE
            if frame is not None:
                return frame
            self._music = None
        return SILENCE

    def mix(self, now: float) -> None:
        """Phase 2 of the tick: set every participant's ``feed``."""
        parts = list(self.participants.values())
        active = [p for p in parts if not p.held]
        overlay: np.ndarray | None = None
        if self._overlays:
            overlay = np.zeros(FRAME_SAMPLES, dtype=np.int32)
            alive: list[Source] = []
            for src in self._overlays:
                f = self._frame_of(src, "beep")
                if f:
                    overlay += np.frombuffer(f, dtype="<i2")
                    alive.append(src)
            self._overlays = alive
        need_music = len(active) == 1 or len(active) < len(parts)
        music = self._music_frame() if need_music else None
        if not need_music and self._music is not None:
            self._music.stop()  # restart from the top next time someone is alone
            self._music = None
        for p in parts:
            if p.held:
                p.leg.feed = music or SILENCE
        if not active:
            return
        if len(active) == 1:
            p = active[0]
            if overlay is None:
                p.leg.feed = music or SILENCE
            else:
                base = np.frombuffer(music or SILENCE, dtype="<i2").astype(np.int32) + overlay
                p.leg.feed = np.clip(base, -32768, 32767).astype("<i2").tobytes()
            return
        heard = [p.leg.heard if not p.muted else None for p in active]
        contrib = np.zeros((len(active), FRAME_SAMPLES), dtype=np.int32)
        for i, h in enumerate(heard):
            if h is not None:
                contrib[i] = np.frombuffer(h, dtype="<i2")
        total = contrib.sum(axis=0)
        if overlay is not None:
            total += overlay
        out = np.clip(total[None, :] - contrib, -32768, 32767).astype("<i2")
        for i, p in enumerate(active):
            p.leg.feed = out[i].tobytes()
