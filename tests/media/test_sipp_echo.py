"""Interop: SIPp's RTP echo (``sipp -rtp_echo``) returns our stream; what comes back is the tone we played."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

from callplane.media.aio import MediaEngine
from callplane.media.events import RecordingFinished
from callplane.media.recorder import Recorder
from callplane.media.sources import ToneSource

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
]


@pytest.fixture
def sipp_echo() -> Iterator[int]:
    """A SIPp UAS that echoes RTP on a random even media port; yields that port."""
    sip_port = random.randrange(20000, 30000)
    media_port = random.randrange(30000, 40000) & ~1
    proc = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(sip_port), "-mi", "127.0.0.1", "-mp", str(media_port)]
        + ["-rtp_echo", "-nostdin", "-timeout", "30s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield media_port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_sipp_echoes_our_tone(sipp_echo: int) -> None:
    engine = MediaEngine(port_range=(40000, 60000), rtcp_interval=3600.0)
    await engine.start()
    try:
        await asyncio.sleep(0.3)  # let SIPp bind its media port
        leg_id, _ = engine.create_leg()
        engine.set_remote(leg_id, "127.0.0.1", sipp_echo)
        engine.set_source(leg_id, ToneSource([1000], None, 0.3))
        rec = Recorder(max_length_s=1.0, trim_silence=True)  # trimmed: the silence before the echo started
        engine.record(leg_id, "/dev/null", rec)
        while True:
            ev = await asyncio.wait_for(engine.events.get(), 10)
            if isinstance(ev, RecordingFinished):
                break
        x = np.frombuffer(rec.pcm(), dtype="<i2").astype(np.float64)
        assert len(x) > 4000, "SIPp echoed less than half a second"
        peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x)
        assert abs(peak_hz - 1000) < 10
    finally:
        await engine.close()
