"""Fixtures for tests that drive real peers: every process a test starts is stopped when the test ends."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.peers import PeerGroup, SippRun


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[PeerGroup]:
    """A :class:`PeerGroup` writing into the test's tmp_path; all its peers are stopped at teardown."""
    group = PeerGroup(tmp_path)
    try:
        yield group
    finally:
        group.close()


def need(*binaries: str) -> None:
    """Skip the calling test when a peer binary is not installed (``make test`` installs them)."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (run scripts/install-system-deps.sh)")


def sipp_callee(peers: PeerGroup, scenario: str, **kwargs: object) -> SippRun:
    """A SIPp server (``scenario`` from ``scenarios/`` or a built-in), skipped when SIPp is not installed."""
    need("sipp")
    return peers.sipp(scenario, **kwargs)  # type: ignore[arg-type]


async def sipp_done(run: SippRun, timeout: float = 15.0) -> None:
    """Wait (off the loop) for SIPp to end its scenario; it must have passed."""
    import asyncio

    code = await asyncio.to_thread(run.wait, timeout)
    assert code == 0, run.report()
