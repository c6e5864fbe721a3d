"""Prompt preparation costs: decode a 5 s MP3 and WAV, TTS cold and cached, and what a decode does to the ticker.

    .venv/bin/python bench/media_decode.py [--quick]

Prints median/p99 in milliseconds for:
  * decode+resample to 8 kHz in-process (the CPU cost of one job) and through the worker pool (what a call waits,
    including the hop to the worker process);
  * TTS (espeak-ng + resample) cold, cached in memory, and cached on disk (a restarted node);
  * how late a 20 ms asyncio ticker that is busy 50 % of each period wakes while decodes run continuously in a
    thread pool versus a process pool (why workers.py uses processes).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from callplane.media import player
from callplane.media.tts import CachingTts, EspeakProvider
from callplane.media.workers import MediaWorkers, make_decode_pool

SENTENCE = "Thank you for calling. Please press one for sales, two for support, or stay on the line for an operator."


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("  ")[0]
    load = os.getloadavg()
    return (
        f"{platform.platform()}, {cpu}, {os.cpu_count()} cores, load {load[0]:.2f}; "
        f"Python {platform.python_version()}, PyAV {av.__version__}, {espeak.strip()}"
    )


def stereo_tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    return np.stack([x, x], axis=1)


def make_wav(seconds: float, rate: int = 44100) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(stereo_tone(seconds, rate).tobytes())
    return buf.getvalue()


def make_mp3(seconds: float, rate: int = 44100) -> bytes:
    packed = stereo_tone(seconds, rate).reshape(1, -1)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="stereo")
        assert isinstance(stream, av.AudioStream)
        stream.bit_rate = 64000
        n = packed.shape[1] // 2
        for i in range(0, n, 1152):
            chunk = np.ascontiguousarray(packed[:, 2 * i : 2 * min(n, i + 1152)])
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def summary(samples_ms: list[float]) -> str:
    s = sorted(samples_ms)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return f"median {statistics.median(s):7.2f} ms   p99 {p99:7.2f} ms   (n={len(s)})"


async def timed(n: int, fn: Callable[[], Awaitable[object]]) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def decode_figures(n: int, tmp: Path) -> None:
    files = {"MP3 5 s 44.1 kHz stereo 64 kbps": make_mp3(5.0), "WAV 5 s 44.1 kHz stereo s16": make_wav(5.0)}
    workers = MediaWorkers(tmp / "decode")
    t0 = time.perf_counter()
    await workers.warm_up()
    print(f"  worker pool start (forkserver + import av): {(time.perf_counter() - t0) * 1000:.0f} ms, once per node")
    for name, data in files.items():
        inproc: list[float] = []
        for _ in range(n):
            t = time.perf_counter()
            player.decode_audio(data)
            inproc.append((time.perf_counter() - t) * 1000)
        pooled = await timed(n, lambda d=data: workers.decode(d, store=False))  # type: ignore[misc]
        print(f"  {name:34s} in-process  {summary(inproc)}")
        print(f"  {'':34s} via pool    {summary(pooled)}")
        await workers.decode(data)
        print(f"  {'':34s} cached      {summary(await timed(n, lambda d=data: workers.decode(d)))}")  # type: ignore[misc]
    await workers.aclose()


async def tts_figures(n: int, tmp: Path) -> None:
    workers = MediaWorkers(tmp / "tts")
    await workers.warm_up()
    provider = EspeakProvider(workers)
    cold = await timed(n, lambda: provider.synthesize(SENTENCE, "woman", "en-US"))
    pcm = await provider.synthesize(SENTENCE, "woman", "en-US")
    print(f"  sentence: {len(SENTENCE)} chars -> {player.pcm_seconds(pcm):.2f} s of speech")
    print(f"  cold (espeak-ng + resample)        {summary(cold)}")
    say = CachingTts(provider, workers)
    await say.synthesize(SENTENCE, "woman", "en-US")
    memory = await timed(n, lambda: say.synthesize(SENTENCE, "woman", "en-US"))
    print(f"  cached, memory                     {summary(memory)}")

    async def from_disk() -> bytes:
        fresh = MediaWorkers(tmp / "tts", executor=ThreadPoolExecutor(1))  # never used: a disk hit
        return await CachingTts(EspeakProvider(fresh), fresh).synthesize(SENTENCE, "woman", "en-US")

    print(f"  cached, disk (restarted node)      {summary(await timed(n, from_disk))}")
    await workers.aclose()


async def ticker_under_decode(kind: str, seconds: float, mp3: bytes) -> str:
    executor: Executor | None
    if kind == "thread pool":
        executor = ThreadPoolExecutor(1)
    elif kind == "process pool":
        executor = make_decode_pool(1)  # niceness 10, as in production
    elif kind == "process, nice 0":
        executor = make_decode_pool(1, niceness=0)
    else:
        executor = None
    loop = asyncio.get_running_loop()
    if executor is not None:
        await loop.run_in_executor(executor, player.decode_audio, mp3)
    stop = False
    decodes = 0

    async def feeder() -> None:
        nonlocal decodes
        while not stop:
            await loop.run_in_executor(executor, player.decode_audio, mp3)
            decodes += 1

    task = asyncio.ensure_future(feeder()) if executor is not None else None
    late: list[float] = []
    start = loop.time()
    tick = 0
    while loop.time() - start < seconds:
        tick += 1
        deadline = start + tick * 0.020
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        late.append((loop.time() - deadline) * 1000)
        busy_until = time.perf_counter() + 0.010  # the engine's work for this tick: 50 % of a core
        while time.perf_counter() < busy_until:
            pass
    stop = True
    if task is not None:
        await task
    if executor is not None:
        executor.shutdown(wait=True)
    late.sort()
    return (
        f"ticker lateness p50 {late[len(late) // 2]:5.2f}  p99 {late[int(len(late) * 0.99)]:5.2f}  "
        f"max {late[-1]:5.2f} ms; {decodes} decodes"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and shorter runs (development)")
    args = parser.parse_args()
    n = 10 if args.quick else 50
    seconds = 3.0 if args.quick else 15.0
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("decode + resample to 8 kHz mono s16:")
        await decode_figures(n, tmp)
        print("TTS, espeak-ng:")
        await tts_figures(n, tmp)
    print(f"20 ms ticker busy 10 ms per tick, {seconds:g} s, decoding 5 s MP3s back to back in:")
    mp3 = make_mp3(5.0)
    for kind in ("nothing", "thread pool", "process, nice 0", "process pool"):
        print(f"  {kind:15s} {await ticker_under_decode(kind, seconds, mp3)}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
