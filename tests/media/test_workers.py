"""The off-loop machinery: a real decode process pool, real subprocesses, the disk cache and single-flight."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from callplane.media.player import DecodeError, UnsupportedFormatError
from callplane.media.workers import CommandError, MediaWorkers, PcmCache, SingleFlight, content_key
from tests.media.loopio import loop_io
from tests.media.test_player import make_mp3, make_wav, peak_hz, tone

KEY_A, KEY_B, KEY_C = (content_key(x) for x in ("a", "b", "c"))


def test_content_key_is_unambiguous_hex() -> None:
    assert content_key("ab", "c") != content_key("a", "bc")
    assert content_key("x", b"y") == content_key("x", "y")
    assert len(content_key("x")) == 64 and set(content_key("x")) <= set("0123456789abcdef")


def test_pcm_cache_round_trip_and_key_validation(tmp_path: Path) -> None:
    cache = PcmCache(tmp_path)
    assert cache.get(KEY_A) is None
    cache.put(KEY_A, b"\x01\x02" * 100)
    assert cache.get(KEY_A) == b"\x01\x02" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{KEY_A}.pcm"]  # no temp files left behind
    for bad in ("../etc/passwd", "ABC", "", "a" * 129):
        with pytest.raises(ValueError):
            cache.get(bad)


def test_pcm_cache_evicts_least_recently_used_by_mtime(tmp_path: Path) -> None:
    cache = PcmCache(tmp_path, max_bytes=1000)
    cache.put(KEY_A, bytes(400))
    cache.put(KEY_B, bytes(400))
    os.utime(cache.path_for(KEY_A), (1000, 1000))
    os.utime(cache.path_for(KEY_B), (2000, 2000))
    assert cache.get(KEY_A) is not None  # a hit makes A the youngest
    cache.put(KEY_C, bytes(400))  # 1200 > 1000: the oldest (B) goes
    assert cache.get(KEY_B) is None
    assert cache.get(KEY_A) is not None and cache.get(KEY_C) is not None
    assert cache.size_bytes() == 800


async def test_single_flight_runs_one_job_for_concurrent_callers() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def job() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "pcm"

    waiters = [asyncio.ensure_future(flight.run("k", job)) for _ in range(10)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller hangs up: the job goes on for the others
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert results == ["pcm"] * 9 and calls == 1 and flight.coalesced == 9 and len(flight) == 0
    assert waiters[0].cancelled()
    assert await flight.run("k", job) == "pcm" and calls == 2  # finished jobs are not remembered


async def test_single_flight_shares_the_failure() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def job() -> str:
        await asyncio.sleep(0)
        raise DecodeError("bad")

    results = await asyncio.gather(*(flight.run("k", job) for _ in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [DecodeError] * 3


async def test_decode_in_the_pool_then_from_memory_then_from_disk(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    mp3 = make_mp3(1000.0, 1.0)
    w = MediaWorkers(tmp_path, executor=pool)
    pcm = await w.decode(mp3)
    assert abs(peak_hz(pcm) - 1000) < 2 and len(pcm) == 16000
    assert (w.stats.jobs, w.stats.produced) == (1, 1)
    assert await w.decode(mp3) == pcm
    assert (w.stats.jobs, w.stats.memory_hits) == (1, 1)
    assert (tmp_path / f"{MediaWorkers.decode_key(mp3)}.pcm").read_bytes() == pcm

    restarted = MediaWorkers(tmp_path, executor=pool)  # a new process of the node: the disk cache survives
    assert await restarted.decode(mp3) == pcm
    assert (restarted.stats.jobs, restarted.stats.disk_hits) == (0, 1)


async def test_concurrent_requests_for_one_prompt_decode_once(workers: MediaWorkers) -> None:
    mp3 = make_mp3(440.0, 0.5)
    results = await asyncio.gather(*(workers.decode(mp3) for _ in range(8)))
    assert len(set(results)) == 1
    assert workers.stats.jobs == 1 and workers.coalesced == 7


async def test_no_store_decodes_without_touching_the_cache(tmp_path: Path, workers: MediaWorkers) -> None:
    mp3 = make_mp3(440.0, 0.5)
    await workers.decode(mp3, store=False)
    await workers.decode(mp3, store=False)
    assert workers.stats.jobs == 2
    assert list((tmp_path / "pcm").iterdir()) == []


async def test_decode_errors_cross_the_process_boundary(workers: MediaWorkers) -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        await workers.decode(b"<html>not audio</html>")
    assert info.value.code == 12300


async def test_decode_file_is_redone_when_the_file_changes(tmp_path: Path, workers: MediaWorkers) -> None:
    path = tmp_path / "hold.wav"
    path.write_bytes(make_wav([tone(500, 0.5, 8000)], 8000))
    first = await workers.decode_file(path)
    assert await workers.decode_file(path) == first and workers.stats.jobs == 1
    path.write_bytes(make_wav([tone(900, 1.0, 8000)], 8000))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse filesystems
    second = await workers.decode_file(path)
    assert workers.stats.jobs == 2 and len(second) == 16000 and abs(peak_hz(second) - 900) < 2
    with pytest.raises(DecodeError, match="cannot read"):
        await workers.decode_file(tmp_path / "missing.mp3")


async def test_file_system_calls_stay_off_the_loop(
    tmp_path: Path, workers: MediaWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hold.wav"
    path.write_bytes(make_wav([tone(500, 0.2, 8000)], 8000))
    with loop_io(tmp_path, monkeypatch) as io:
        await workers.decode_file(path)
        await workers.decode_file(path)
        assert await workers.run_command([sys.executable, "-c", "print('x')"]) == b"x\n"
    assert io.calls == []


async def test_a_crashed_worker_is_replaced(tmp_path: Path) -> None:
    w = MediaWorkers(tmp_path)  # owns its pool
    try:
        with pytest.raises(DecodeError, match="crashed"):
            await w.run(os._exit, 3)
        assert w.stats.pool_restarts == 1
        pcm = await w.decode(make_mp3(1000.0, 0.5))
        assert abs(peak_hz(pcm) - 1000) < 4
    finally:
        await w.aclose()


async def test_a_stuck_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    w = MediaWorkers(tmp_path, job_timeout=1.0)
    try:
        await w.warm_up()
        with pytest.raises(DecodeError, match="did not finish within 1 s"):
            await w.run(time.sleep, 60)
        assert w.stats.pool_restarts == 1
        pcm = await w.decode(make_mp3(1000.0, 0.5))  # a fresh worker answers at once
        assert abs(peak_hz(pcm) - 1000) < 4
    finally:
        await w.aclose()


async def test_run_command_passes_stdin_and_returns_stdout(workers: MediaWorkers) -> None:
    out = await workers.run_command(
        [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read()[::-1])"], stdin=b"-v abc"
    )
    assert out == b"cba v-"
    assert workers.stats.commands == 1


async def test_run_command_failures(workers: MediaWorkers) -> None:
    with pytest.raises(CommandError, match="exited with status 3: boom"):
        await workers.run_command([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    with pytest.raises(CommandError, match="did not finish within 0.2 s"):
        await workers.run_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.2)
    with pytest.raises(CommandError, match="cannot start"):
        await workers.run_command(["/nonexistent/espeak-ng"])
    with pytest.raises(CommandError, match="over the 10 byte limit"):
        await workers.run_command([sys.executable, "-c", "print('x' * 100)"], max_output=10)


async def test_decoders_and_commands_run_below_the_engine_priority(workers: MediaWorkers) -> None:
    base = os.nice(0)
    assert await workers.run(os.nice, 0) == min(19, base + 10)
    out = await workers.run_command([sys.executable, "-c", "import os; print(os.nice(0))"])
    assert int(out) == min(19, base + 10)
    quiet = MediaWorkers(workers.cache.directory, executor=None, niceness=0)
    assert int(await quiet.run_command([sys.executable, "-c", "import os; print(os.nice(0))"])) == base
