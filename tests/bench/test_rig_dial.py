"""The parts of ``bench/call_cps.py --dial`` that run without the node: the caller's audio (``bench/rig_rtp.py``,
against a socket standing in for the node) and SIPp scenario (against a real SIPp UAS), the number it provisions,
the callee RCML."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from bench.rig_dial import NUMBER, dial_rcml, max_concurrent, provision, uac_scenario
from bench.rig_rtp import QUIET_S, injection_file, play
from callplane.media import g711
from callplane.media.rtp import RtpPacket
from callplane.rcml import verbs
from callplane.rcml.parser import parse_document
from callplane.store import numbers
from callplane.store.db import Database
from tests.interop.peers import LOOPBACK, PeerGroup

ACCOUNT, TOKEN = "AC" + "c" * 32, "rig-dial-token-0123"


def test_caller_audio_plays_a_tone_to_whoever_speaks_first_then_rearms(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    conn, end = ctx.Pipe()
    ready, stop = ctx.Event(), ctx.Event()
    player = ctx.Process(target=play, args=(2, 0.5, ready, stop, end), daemon=True)
    player.start()
    node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ports = conn.recv()
        assert len(ports) == 2 and all(p % 2 == 0 for p in ports)
        inf = injection_file(tmp_path / "caller.csv", ports)
        assert inf.read_text() == f"SEQUENTIAL\n{ports[0]};\n{ports[1]};\n"
        assert ready.wait(10)
        node.bind((LOOPBACK, 0))
        node.settimeout(2.0)
        streams = []
        for _ in range(2):  # a port is armed again after its stream and the quiet time
            node.sendto(b"\x80" + bytes(171), (LOOPBACK, ports[0]))  # as the node's first (filler) packet
            packets = [RtpPacket.parse(node.recv(2048))]
            with contextlib.suppress(TimeoutError):
                while True:
                    node.settimeout(0.3)
                    packets.append(RtpPacket.parse(node.recv(2048)))
            node.settimeout(QUIET_S + 2.0)
            streams.append(packets)
            time.sleep(QUIET_S + 0.2)
        stop.set()
        figures = conn.recv()
    finally:
        node.close()
        player.join(5)
    assert (figures["streams"], figures["sent"]) == (2, sum(len(p) for p in streams))
    for packets in streams:
        assert 20 <= len(packets) <= 26  # 0.5 s of 20 ms frames, from the moment the node spoke
        assert {p.payload_type for p in packets} == {0} and len({p.ssrc for p in packets}) == 1
        assert [p.marker for p in packets[:2]] == [True, False]
        assert [(p.sequence - packets[0].sequence) & 0xFFFF for p in packets] == list(range(len(packets)))
        assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * k for k in range(len(packets))]
        pcm = np.frombuffer(b"".join(g711.decode(p.payload, 0) for p in packets), dtype="<i2").astype(np.float64)
        assert np.argmax(np.abs(np.fft.rfft(pcm))) * 8000 / len(pcm) == pytest.approx(1000, abs=20)
    assert streams[0][0].ssrc != streams[1][0].ssrc


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
def test_caller_scenario_offers_the_injected_ports_in_order_and_hangs_up(tmp_path: Path) -> None:
    group = PeerGroup(tmp_path)
    try:
        callee = group.sipp("uas", calls=3, timeout=30)
        inf = injection_file(tmp_path / "caller.csv", [40100, 40102])
        scenario = tmp_path / "caller.xml"
        scenario.write_text(uac_scenario(1000))
        caller = group.sipp(
            str(scenario), (LOOPBACK, callee.port), calls=3, rate=10, limit=1, service=NUMBER, extra=["-inf", str(inf)]
        )
        assert caller.wait(30) == 0, caller.errors()
        stats = caller.stats()
        assert (stats.successful, stats.failed) == (3, 0)
        assert max_concurrent(caller.stat_path) == 1
        sent = caller.messages(received=False)
        invites = [m for m in sent if m.is_request and m.method == "INVITE"]
        assert {m.request_uri for m in invites} == {f"sip:{NUMBER}@{LOOPBACK}:{callee.port}"}
        offered = [re.search(r"m=audio (\d+) RTP/AVP 0 101", m.body) for m in invites]
        assert [int(m.group(1)) for m in offered if m] == [40100, 40102, 40100]  # the lines in order, then again
        assert [m.method for m in sent if m.is_request] == ["INVITE", "ACK", "BYE"] * 3
    finally:
        group.close()
