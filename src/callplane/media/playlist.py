"""Playlists: a sequence of prompts with RCML loop counts, as one :class:`~callplane.media.sources.Source`.

An item is ready PCM (8 kHz s16le, played through a fresh :class:`PcmSource` on every pass) or a factory that
makes a new source per pass. Each item has its own ``loop`` (``<Say loop="2">`` inside a ``<Gather>``) and the
playlist has one for the whole list; in both, ``loop=N`` plays N times and ``loop=0`` repeats until stopped.

Barge-in: :meth:`Playlist.stop` ends playback at once (Gather calls it on the first DTMF digit). The engine
learns that a playlist ended from ``read()`` returning ``None``, from :attr:`Playlist.finished`, or from the
``on_finished`` callback (called once, with ``stopped=True`` for barge-in).

``read()`` runs on the ticker for every leg: it only slices buffers; nothing is decoded here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from callplane.media.sources import PcmSource, SilenceSource, Source

__all__ = ["PauseSource", "PlayItem", "Playlist"]

SourceFactory = Callable[[], Source]


class PauseSource(SilenceSource):
    """RCML ``<Pause length="N">``: N seconds of silence (rounded to 20 ms frames)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(max(0.0, seconds))
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class PlayItem:
    """One entry of a playlist: ready PCM or a source factory, played ``loop`` times (0 = until stopped)."""

    content: bytes | SourceFactory
    loop: int = 1

    def __post_init__(self) -> None:
        if self.loop < 0:
            raise ValueError(f"loop must be >= 0, got {self.loop}")

    @classmethod
    def pause(cls, seconds: float) -> PlayItem:
        return cls(lambda: PauseSource(seconds))

    def open(self) -> Source:
        if isinstance(self.content, bytes):
            return PcmSource(self.content)
        return self.content()


class Playlist:
    """Plays ``items`` in order, ``loop`` times over (0 = until :meth:`stop`)."""

    def __init__(
        self,
        items: Iterable[PlayItem | bytes | SourceFactory],
        *,
        loop: int = 1,
        on_finished: Callable[[bool], None] | None = None,
    ) -> None:
        if loop < 0:
            raise ValueError(f"loop must be >= 0, got {loop}")
        self._items = [it if isinstance(it, PlayItem) else PlayItem(it) for it in items]
        self._loop = loop
        self._on_finished = on_finished
        self._pass = 0  # completed passes over the whole list
        self._index = 0  # current item
        self._repeat = 0  # completed plays of the current item
        self._current: Source | None = None
        self._frames_this_pass = 0
        self._frames_this_play = 0
        self._done = not self._items
        self._stopped = False
        self._notified = False
        self.frames_played = 0

    @property
    def finished(self) -> bool:
        """True once the list has played out or was stopped."""
        return self._done

    @property
    def stopped(self) -> bool:
        """True if it ended by :meth:`stop` (barge-in) rather than by playing out."""
        return self._stopped

    def read(self) -> bytes | None:
        while not self._done:
            if self._current is None:
                self._current = self._items[self._index].open()
                self._frames_this_play = 0
            frame = self._current.read()
            if frame is not None:
                self._frames_this_pass += 1
                self._frames_this_play += 1
                self.frames_played += 1
                return frame
            self._current = None
            self._advance()
        self._notify()
        return None

    def stop(self) -> None:
        if self._done:
            return
        self._stopped = True
        self._done = True
        if self._current is not None:
            self._current.stop()
            self._current = None
        self._notify()

    def _advance(self) -> None:
        item = self._items[self._index]
        self._repeat += 1
        if item.loop == 0 or self._repeat < item.loop:
            if item.loop == 0 and self._frames_this_play == 0:
                # An endless item that yields nothing would spin the ticker forever: treat it as played out.
                self._done = True
            return
        self._repeat = 0
        self._index += 1
        if self._index < len(self._items):
            return
        self._index = 0
        self._pass += 1
        if self._frames_this_pass == 0 or (self._loop != 0 and self._pass >= self._loop):
            # Every item was empty: repeating cannot produce sound, only a busy loop.
            self._done = True
        self._frames_this_pass = 0

    def _notify(self) -> None:
        if not self._notified and self._on_finished is not None:
            self._notified = True
            self._on_finished(self._stopped)
