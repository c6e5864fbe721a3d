"""The parts of ``bench/call_cps.py --dial`` that run without the node: the caller's tone pcap and scenario (against a
real SIPp UAS with ``-rtp_echo``, watched by the rig's packet observer), the number it provisions, the callee RCML."""

from __future__ import annotations

import multiprocessing as mp
import struct
from pathlib import Path

import numpy as np
import pytest

from bench.rig_dial import NUMBER, dial_rcml, max_concurrent, provision, uac_scenario, write_tone_pcap
from bench.rig_observer import observe
from callplane.media import g711
from callplane.media.rtp import RtpPacket
from callplane.rcml import verbs
from callplane.rcml.parser import parse_document
from callplane.store import numbers
from callplane.store.db import Database
from tests.interop.peers import LOOPBACK, PeerGroup
from tests.media.pcapfile import udp_payloads

ACCOUNT, TOKEN = "AC" + "c" * 32, "rig-dial-token-0123"


def test_tone_pcap_is_20_ms_pcmu_packets_of_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.pcap"
    assert write_tone_pcap(path, 2.0, hz=1000) == 100
    packets = [RtpPacket.parse(p) for p in udp_payloads(path)]
    assert len(packets) == 100 and {p.payload_type for p in packets} == {0} and len({p.ssrc for p in packets}) == 1
    assert [p.sequence for p in packets] == list(range(100))
    assert [p.timestamp for p in packets] == [160 * k for k in range(100)]
    assert [p.marker for p in packets[:2]] == [True, False]
    # capture times 20 ms apart (play_pcap_audio paces by them)
    data = path.read_bytes()
    times, pos = [], 24
    while pos < len(data):
        sec, usec, incl, _ = struct.unpack_from("<IIII", data, pos)
        times.append(sec + usec / 1e6)
        pos += 16 + incl
    assert np.allclose(np.diff(times), 0.02)
    pcm = np.frombuffer(b"".join(g711.decode(p.payload, 0) for p in packets), dtype="<i2").astype(np.float64)
    assert np.argmax(np.abs(np.fft.rfft(pcm))) * 8000 / len(pcm) == pytest.approx(1000, abs=5)


def test_callee_rcml_dials_the_sip_uas() -> None:
    doc = parse_document(dial_rcml(5099), "http://127.0.0.1/rcml")
    (dial,) = doc.verbs
    assert isinstance(dial, verbs.Dial)
    assert dial.nouns == (verbs.Sip("sip:callee@127.0.0.1:5099"),)


async def test_provision_makes_the_number_the_node_routes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'callplane.db').as_posix()}"
    sid = await provision(url, ACCOUNT, TOKEN, "http://127.0.0.1:9/rcml", "http://127.0.0.1:9/status")
    db = Database(url)
    try:
        rec = await numbers.by_phone_number(db, NUMBER)
    finally:
        await db.close()
    assert rec is not None and rec.sid == sid and rec.account_sid == ACCOUNT
    assert (rec.voice_url, rec.voice_method, rec.status_callback) == (
        "http://127.0.0.1:9/rcml",
        "GET",
        "http://127.0.0.1:9/status",
    )


@pytest.mark.interop
def test_caller_scenario_plays_its_tone_to_an_echoing_uas_and_hangs_up(tmp_path: Path) -> None:
    group = PeerGroup(tmp_path)
    ctx = mp.get_context("fork")
    try:
        callee = group.sipp("uas", extra=["-rtp_echo"], calls=3, timeout=30)
        ready, stop = ctx.Event(), ctx.Event()
        obs_conn, obs_end = ctx.Pipe()
        observer = ctx.Process(target=observe, args=(callee.port, callee.media_port, ready, stop, obs_end))
        observer.start()
        ready.wait(10)
        pcap = tmp_path / "tone.pcap"
        write_tone_pcap(pcap, 2.0)
        scenario = tmp_path / "caller.xml"
        scenario.write_text(uac_scenario(1000, pcap))
        # one call at a time: SIPp plays every call's pcap from its one media port, so calls that overlapped
        # would interleave in the observer's per-port gaps (the node's legs each have their own port)
        caller = group.sipp(str(scenario), (LOOPBACK, callee.port), calls=3, rate=10, limit=1, service=NUMBER)
        assert caller.wait(30) == 0, caller.errors()
        stats = caller.stats()
        assert (stats.successful, stats.failed) == (3, 0)
        assert max_concurrent(caller.stat_path) == 1
        invites = [m for m in caller.messages(received=False) if m.is_request and m.method == "INVITE"]
        assert {m.request_uri for m in invites} == {f"sip:{NUMBER}@{LOOPBACK}:{callee.port}"}
        stop.set()
        figures = obs_conn.recv() if obs_conn.poll(15) else None
        observer.join(5)
    finally:
        group.close()
    if figures is None:
        pytest.skip("the packet observer needs CAP_NET_RAW")
    # each call's 1 s of tone reached the callee's media port, paced at 20 ms
    assert len(figures["gaps"]) >= 3 * 40
    assert 15 < float(np.median(figures["gaps"])) < 25
