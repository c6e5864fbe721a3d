"""Fixtures shared by the media tests: one decode process pool per module, a worker facade per test, and a running
engine with RTCP out of the way (modules that test every io_mode define their own ``engine``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from callplane.media.aio import MediaEngine
from callplane.media.workers import MediaWorkers, make_decode_pool


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = make_decode_pool(1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
async def workers(tmp_path: Path, pool: ProcessPoolExecutor) -> AsyncIterator[MediaWorkers]:
    w = MediaWorkers(tmp_path / "pcm", executor=pool)
    yield w
    await w.aclose()


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(port_range=(30000, 60000), rtcp_interval=3600.0)
    await eng.start()
    yield eng
    await eng.close()
