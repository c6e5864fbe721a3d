"""Playlists: order, RCML loop counts (0 = until stopped), barge-in and the finished signal."""

from __future__ import annotations

import pytest

from callplane.media.playlist import PauseSource, PlayItem, Playlist
from callplane.media.sources import FRAME_BYTES, SILENCE, PcmSource, Source


def frames_of(byte: int, n: int) -> bytes:
    return bytes([byte]) * (FRAME_BYTES * n)


A = frames_of(1, 2)  # two frames of 0x01
B = frames_of(2, 1) + b"\x02\x02"  # one frame and a 2-byte tail, padded on playback
B_PLAYED = [frames_of(2, 1), b"\x02\x02" + bytes(FRAME_BYTES - 2)]


def drain(src: Source, limit: int = 10_000) -> list[bytes]:
    out: list[bytes] = []
    while (frame := src.read()) is not None:
        out.append(frame)
        assert len(out) < limit, "source did not finish"
    return out


class Spy:
    """A source that records the calls the playlist makes."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.stopped = False

    def read(self) -> bytes | None:
        if self.stopped or self.left == 0:
            return None
        self.left -= 1
        return frames_of(9, 1)

    def stop(self) -> None:
        self.stopped = True


def test_items_play_in_order_and_the_end_is_signalled_once() -> None:
    ended: list[bool] = []
    pl = Playlist([A, B], on_finished=ended.append)
    assert drain(pl) == [frames_of(1, 1)] * 2 + B_PLAYED
    assert pl.finished and not pl.stopped and pl.frames_played == 4
    assert pl.read() is None and pl.read() is None
    assert ended == [False]


def test_loop_n_plays_the_list_n_times() -> None:
    assert drain(Playlist([A, B], loop=3)) == ([frames_of(1, 1)] * 2 + B_PLAYED) * 3


def test_item_loops_nest_inside_the_list_loop() -> None:
    pl = Playlist([PlayItem(A, loop=2), B], loop=2)
    assert drain(pl) == ([frames_of(1, 1)] * 4 + B_PLAYED) * 2


def test_loop_zero_repeats_until_barge_in() -> None:
    ended: list[bool] = []
    pl = Playlist([B], loop=0, on_finished=ended.append)
    got = [pl.read() for _ in range(1000)]
    assert got == B_PLAYED * 500 and not pl.finished and ended == []
    pl.stop()  # the first DTMF digit of a Gather
    assert pl.read() is None
    assert pl.finished and pl.stopped and ended == [True]
    pl.stop()
    assert ended == [True]


def test_an_endless_item_never_yields_to_the_next() -> None:
    pl = Playlist([PlayItem(A, loop=0), B])
    assert [pl.read() for _ in range(50)] == [frames_of(1, 1)] * 50


def test_barge_in_stops_the_current_source_mid_item() -> None:
    spy = Spy(10)
    pl = Playlist([lambda: spy, A])
    assert pl.read() == frames_of(9, 1)
    pl.stop()
    assert spy.stopped and pl.read() is None and pl.frames_played == 1


def test_factories_make_a_fresh_source_per_pass() -> None:
    made: list[Spy] = []

    def factory() -> Source:
        made.append(Spy(2))
        return made[-1]

    assert len(drain(Playlist([PlayItem(factory, loop=2)], loop=3))) == 12
    assert len(made) == 6


def test_stop_after_the_natural_end_is_not_a_barge_in() -> None:
    ended: list[bool] = []
    pl = Playlist([A], on_finished=ended.append)
    drain(pl)
    pl.stop()
    assert not pl.stopped and ended == [False]


def test_empty_playlists_end_at_once_even_when_looping_forever() -> None:
    assert Playlist([]).read() is None
    assert Playlist([], loop=0).finished
    assert Playlist([b"", lambda: PcmSource(b"")], loop=0).read() is None
    assert Playlist([PlayItem(b"", loop=0), A]).read() is None  # an endless empty item cannot spin the ticker


def test_pause_is_silence_for_its_length() -> None:
    assert drain(PauseSource(1.0)) == [SILENCE] * 50
    assert drain(PauseSource(0)) == []
    assert drain(PauseSource(-3)) == []
    pl = Playlist([A, PlayItem.pause(0.1), B])
    assert drain(pl) == [frames_of(1, 1)] * 2 + [SILENCE] * 5 + B_PLAYED


def test_negative_loops_are_rejected() -> None:
    with pytest.raises(ValueError):
        Playlist([A], loop=-1)
    with pytest.raises(ValueError):
        PlayItem(A, loop=-2)
