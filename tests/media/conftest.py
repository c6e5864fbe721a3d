"""Fixtures shared by the media tests: one decode process pool per module and a worker facade per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

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
