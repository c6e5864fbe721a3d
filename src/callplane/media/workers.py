"""Off-loop machinery for prompts: a decode worker pool, subprocesses, a disk cache and single-flight.

Theory of operation
-------------------
The 20 ms ticker shares the event loop with every leg, so nothing CPU-bound may run there. Audio decoding and
resampling (PyAV) run in a **process pool**. Measured on this 2-core machine (``bench/media_decode.py``): two
threads decoding MP3 with PyAV were no faster than one (the per-frame Python work holds the GIL), and with
decodes running back to back beside a loop that is busy 10 ms of every 20 ms tick, the ticker woke with p99
lateness 2-5 ms with no decoding, 6-15 ms with a decode thread, 3-11 ms with a worker process at normal
priority and about 3 ms with the worker at niceness 10. So: processes, started with ``forkserver`` (never
``fork`` from a process that runs an event loop and threads), at niceness 10 so the scheduler favours the
engine, and one worker by default so the second core is left to the engine; jobs queue rather than compete.

TTS engines are external programs started with :meth:`MediaWorkers.run_command`
(``asyncio.create_subprocess_exec``: no shell, no blocking wait; under ``nice`` as well).

Every prompt is cached as decoded PCM (8 kHz s16le) under a content key (:func:`content_key`): first in a small
in-memory LRU, then on disk as ``<key>.pcm`` in the directory the node passes in (under its data dir). Disk
entries are written atomically (temp file + rename) and evicted least-recently-used first, by mtime (a hit
touches the file), when the directory exceeds its byte budget. Concurrent requests for one key coalesce into a
single job (:class:`SingleFlight`): a hundred calls answering the same ``<Say>`` at once start espeak-ng once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import multiprocessing
import os
import shutil
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from callplane.media import player
from callplane.media.player import PlaybackError

__all__ = [
    "CommandError",
    "MediaWorkers",
    "PcmCache",
    "SingleFlight",
    "WorkerStats",
    "cache_files",
    "content_key",
    "make_decode_pool",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DISK_BYTES = 512 * 1024 * 1024
DEFAULT_MEMORY_BYTES = 32 * 1024 * 1024
#: Decoders and TTS engines yield the CPU to the engine process: a prompt that is late by a few ms is better
#: than hundreds of legs whose frames go out late.
DEFAULT_NICENESS = 10
_HEX = frozenset("0123456789abcdef")
# SHA-256 runs at roughly 1-2 GB/s here: below 64 kB it costs less on the loop than a hop to a thread.
_HASH_ON_LOOP_BYTES = 64 * 1024


class CommandError(PlaybackError):
    """An external program (a TTS engine) failed, timed out or could not be started."""


def content_key(*parts: str | bytes) -> str:
    """A cache key: SHA-256 over length-prefixed parts, so ``("ab", "c")`` and ``("a", "bc")`` differ."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "big"))
        h.update(raw)
    return h.hexdigest()


def _lower_priority(niceness: int) -> None:
    if niceness > 0:
        os.nice(niceness)


def make_decode_pool(max_workers: int = 1, niceness: int = DEFAULT_NICENESS) -> ProcessPoolExecutor:
    """The decode pool: ``forkserver`` processes with PyAV imported once, at a lower CPU priority."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["callplane.media.player"])
    return ProcessPoolExecutor(
        max_workers=max_workers, mp_context=ctx, initializer=_lower_priority, initargs=(niceness,)
    )


class SingleFlight(Generic[T]):
    """Coalesce concurrent calls for one key into one job; every caller gets its result (or its exception).

    The job runs as its own task: a caller that is cancelled stops waiting, but the job finishes for the
    others (and fills the cache for the next caller).
    """

    def __init__(self) -> None:
        self._jobs: dict[str, asyncio.Task[T]] = {}
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._jobs)

    async def run(self, key: str, job: Callable[[], Awaitable[T]]) -> T:
        task = self._jobs.get(key)
        if task is None:
            task = asyncio.ensure_future(job())
            self._jobs[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        else:
            self.coalesced += 1
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self._jobs.get(key) is task:
            del self._jobs[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" noise when every waiter went away


class PcmCache:
    """Decoded PCM on disk, ``<key>.pcm``, bounded to ``max_bytes`` with LRU-by-mtime eviction.

    Blocking file I/O: :class:`MediaWorkers` calls these methods from a thread.
    """

    def __init__(self, directory: Path, max_bytes: int | None = DEFAULT_DISK_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count(1)  # unique temp names across the threads that write

    def path_for(self, key: str) -> Path:
        if not key or len(key) > 128 or not set(key) <= _HEX:
            raise ValueError(f"cache key must be lowercase hex: {key!r}")
        return self.directory / f"{key}.pcm"

    def get(self, key: str) -> bytes | None:
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            os.utime(path)  # LRU: a hit makes the entry young again
        except FileNotFoundError:
            pass  # evicted by a concurrent put; we already hold the bytes
        return data

    def put(self, key: str, pcm: bytes) -> None:
        path = self.path_for(key)
        tmp = path.with_name(f".{key}.{os.getpid()}.{next(self._seq)}.tmp")
        tmp.write_bytes(pcm)
        os.replace(tmp, path)
        self.evict(keep=path.name)

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self, keep: str | None = None) -> int:
        """Delete the least recently used entries until the directory fits its budget; returns how many."""
        if self.max_bytes is None:
            return 0
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if path.name == keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            total -= size
            removed += 1
        return removed

    def _entries(self) -> list[tuple[float, int, Path]]:
        return cache_files(self.directory, ".pcm")


def cache_files(directory: Path, suffix: str) -> list[tuple[float, int, Path]]:
    """``(mtime, size, path)`` of the finished cache files (not the ``.``-prefixed temporaries) in ``directory``.
    Blocking: call it from a thread."""
    out: list[tuple[float, int, Path]] = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith(suffix) and not entry.name.startswith("."):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed by a concurrent eviction
                out.append((st.st_mtime, st.st_size, Path(entry.path)))
    return out


def _resolve_and_stat(path: Path) -> tuple[Path, os.stat_result]:
    resolved = path.resolve()
    return resolved, resolved.stat()


@dataclass(slots=True)
class WorkerStats:
    """Counters for tests, logs and benchmarks."""

    memory_hits: int = 0
    disk_hits: int = 0
    produced: int = 0
    jobs: int = 0
    commands: int = 0
    pool_restarts: int = 0


class _MemoryLru:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[key] = value
        self._bytes += len(value)
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)


class MediaWorkers:
    """The node's off-loop worker facade: decode pool, subprocesses, PCM cache and single-flight.

    ``cache_dir`` is a directory under the node's data dir. ``executor`` may be supplied (and is then owned by
    the caller); by default a one-process :func:`make_decode_pool` is created on first use and shut down by
    :meth:`aclose`.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        executor: Executor | None = None,
        max_workers: int = 1,
        max_disk_bytes: int | None = DEFAULT_DISK_BYTES,
        max_memory_bytes: int = DEFAULT_MEMORY_BYTES,
        max_seconds: float = player.DEFAULT_MAX_SECONDS,
        niceness: int = DEFAULT_NICENESS,
        job_timeout: float = 120.0,
    ) -> None:
        self.job_timeout = job_timeout
        self.cache = PcmCache(cache_dir, max_disk_bytes)
        self.niceness = niceness
        self._programs: dict[str, str] = {}  # name -> path found on PATH (looked up in a thread, once)
        self.stats = WorkerStats()
        self.max_seconds = max_seconds
        self._executor = executor
        self._owns_executor = executor is None
        self._max_workers = max_workers
        self._memory = _MemoryLru(max_memory_bytes)
        self._flight: SingleFlight[bytes] = SingleFlight()

    @property
    def coalesced(self) -> int:
        """Requests that joined a job already in flight instead of starting their own."""
        return self._flight.coalesced

    # -- the pool ---------------------------------------------------------------------------------------
    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = make_decode_pool(self._max_workers, self.niceness)
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a picklable module-level function in the decode pool, within ``job_timeout`` seconds."""
        loop = asyncio.get_running_loop()
        self.stats.jobs += 1
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        pool = self._pool()
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, call), self.job_timeout)
        except TimeoutError:
            # A worker stuck on a hostile file would hold the pool forever: kill it and start afresh.
            self._replace_pool(pool, kill=True)
            raise player.DecodeError(f"the decoder did not finish within {self.job_timeout:g} s") from None
        except BrokenProcessPool:
            # A worker died (a crash inside FFmpeg, or killed above): replace the pool so later jobs work.
            self._replace_pool(pool, kill=False)
            raise player.DecodeError("the decoder process crashed on this input") from None

    def _replace_pool(self, pool: Executor, *, kill: bool) -> None:
        if not self._owns_executor or self._executor is not pool:
            return  # not ours, or already replaced by another failed job
        self._executor = None
        self.stats.pool_restarts += 1
        if kill:
            # ProcessPoolExecutor has no public way to stop a running job before Python 3.14.
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("decode pool replaced (%s)", "job timed out" if kill else "worker died")

    async def warm_up(self) -> None:
        """Start the pool's processes now rather than on the first prompt."""
        await self.run(player.pcm_seconds, b"")

    async def aclose(self) -> None:
        if self._owns_executor and self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking file-system work (``fn(*args)``) in a thread, off the event loop the ticker runs on."""
        return await asyncio.to_thread(fn, *args)

    # -- the cache --------------------------------------------------------------------------------------
    def peek(self, key: str) -> bytes | None:
        """PCM for ``key`` if it is in memory, else ``None``: no I/O, no task (a caller on the hot path tries
        this first and awaits :meth:`cached` only on a miss)."""
        pcm = self._memory.get(key)
        if pcm is not None:
            self.stats.memory_hits += 1
        return pcm

    async def lookup(self, key: str) -> bytes | None:
        """Cached PCM for ``key`` (memory, then disk) or ``None``; never produces."""
        pcm = self.peek(key)
        if pcm is not None:
            return pcm
        pcm = await asyncio.to_thread(self.cache.get, key)
        if pcm is not None:
            self.stats.disk_hits += 1
            self._memory.put(key, pcm)
        return pcm

    async def cached(self, key: str, produce: Callable[[], Awaitable[bytes]], *, store: bool = True) -> bytes:
        """PCM for ``key``: from the cache, else from ``produce()`` (once, however many callers ask at once).

        ``store=False`` (HTTP ``no-store``) neither reads nor writes the cache.
        """
        if store:
            pcm = self.peek(key)
            if pcm is not None:
                return pcm

        async def job() -> bytes:
            if store:
                hit = await self.lookup(key)
                if hit is not None:
                    return hit
            pcm = await produce()
            self.stats.produced += 1
            if store:
                await asyncio.to_thread(self.cache.put, key, pcm)
                self._memory.put(key, pcm)
            return pcm

        return await self._flight.run(key if store else "nostore:" + key, job)

    # -- decoding ---------------------------------------------------------------------------------------
    @staticmethod
    def decode_key(data: bytes) -> str:
        """The cache key of the decode of ``data`` (its content hash and the decoder version)."""
        return content_key("decode", player.DECODER_VERSION, hashlib.sha256(data).digest())

    async def decode_key_async(self, data: bytes) -> str:
        """:meth:`decode_key`, hashed in a thread when ``data`` is big enough to matter to the ticker."""
        if len(data) < _HASH_ON_LOOP_BYTES:
            return self.decode_key(data)
        return await asyncio.to_thread(self.decode_key, data)  # hashlib releases the GIL

    async def decode(self, data: bytes, *, store: bool = True, key: str | None = None) -> bytes:
        """WAV/MP3 bytes -> 8 kHz s16le PCM, decoded in the pool, cached under :meth:`decode_key`
        (pass ``key`` if it is already known)."""
        if key is None:
            key = await self.decode_key_async(data)
        return await self.cached(
            key, lambda: self.run(player.decode_audio, data, max_seconds=self.max_seconds), store=store
        )

    async def decode_file(self, path: str | os.PathLike[str]) -> bytes:
        """A local WAV/MP3 file -> PCM; cached under (path, size, mtime), so an edited file is decoded again."""
        try:
            p, st = await asyncio.to_thread(_resolve_and_stat, Path(path))  # file system calls: not on the loop
        except OSError as exc:
            raise player.DecodeError(f"cannot read {path}: {exc.strerror or exc}") from None
        key = content_key("file", player.DECODER_VERSION, str(p), str(st.st_size), str(st.st_mtime_ns))
        return await self.cached(key, lambda: self.run(player.decode_file, p, max_seconds=self.max_seconds))

    # -- subprocesses -----------------------------------------------------------------------------------
    async def _which(self, name: str) -> str | None:
        """``shutil.which`` (it stats every PATH entry) in a thread; a program once found is remembered."""
        found = self._programs.get(name)
        if found is None:
            found = await asyncio.to_thread(shutil.which, name)
            if found is not None:
                self._programs[name] = found
        return found

    async def run_command(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 30.0,
        max_output: int = 64 * 1024 * 1024,
    ) -> bytes:
        """Run a program without a shell and return its stdout; non-zero exit, timeout or overflow raise.

        The child is killed if it times out or if the caller is cancelled.
        """
        self.stats.commands += 1
        program = await self._which(argv[0])
        if program is None:
            raise CommandError(f"cannot start {argv[0]}: not found or not executable")
        cmd = [program, *argv[1:]]
        nice = await self._which("nice") if self.niceness > 0 else None
        if nice is not None:
            cmd = [nice, "-n", str(self.niceness), *cmd]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise CommandError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            raise CommandError(f"{argv[0]} did not finish within {timeout:g} s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[:200]
            raise CommandError(f"{argv[0]} exited with status {proc.returncode}: {detail}")
        if len(out) > max_output:
            raise CommandError(f"{argv[0]} produced {len(out)} bytes, over the {max_output} byte limit")
        return out
