"""The real node, ``callplane serve``, as a subprocess: its SIP endpoint as SIPp sees it (issue 3 item 7).

OPTIONS is answered 200 with Allow and Accept (also after a burst of garbage datagrams), an INVITE from the trusted
trunk address (``CALLPLANE_TRUSTED_PEERS=127.0.0.1/32``) that routes nowhere is answered 404, ACKed, and its
retransmission absorbed by the server transaction, the same INVITE from another address is refused 403, and real
clients register to its registrar (Client ``alice``/``secret`` from ``CALLPLANE_SIP_CLIENTS``).
"""

from __future__ import annotations

import os
import random
import socket
import sys
from collections.abc import Iterator

import pytest

from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, Peer, PeerError, PeerGroup, free_port, sip_ping, wait_udp_bound

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, int]]:
    """One node for the module: ``callplane serve`` on free SIP and HTTP ports with a fresh data directory."""
    tmp = tmp_path_factory.mktemp("node")
    group = PeerGroup(tmp)
    sip, http = free_port(), free_port()
    argv = [sys.executable, "-m", "callplane", "serve"]
    argv += ["--sip", f"{LOOPBACK}:{sip}", "--http", f"{LOOPBACK}:{http}", "--data", str(tmp / "data")]
    env = {**os.environ, "CALLPLANE_SIP_CLIENTS": "alice:secret", "CALLPLANE_TRUSTED_PEERS": "127.0.0.1/32"}
    try:
        proc = group.start("callplane-serve", argv, env=env)
        try:
            proc.wait_output(r"HTTP API on", timeout=30)
        except PeerError as exc:
            pytest.fail(f"callplane serve did not start: {exc}")
        wait_udp_bound(sip, timeout=5, peer=proc)
        wait_udp_bound(sip, timeout=5, peer=proc, proto="tcp")
        yield proc, sip
    finally:
        group.close()


def test_node_answers_options_even_after_garbage(peers: PeerGroup, node: tuple[Peer, int]) -> None:
    need("sipp")
    _, port = node
    assert sip_ping(LOOPBACK, port) == 200
    assert sip_ping(LOOPBACK, port, transport="tcp") == 200
    rng = random.Random(11)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(500):
            junk.sendto(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 600))), (LOOPBACK, port))
    finally:
        junk.close()
    run = peers.sipp("uac_garbage", (LOOPBACK, port), service="ping")
    assert run.wait() == 0, run.report()
    ok = run.messages(received=True)[-1]
    assert (ok.status, ok.method) == (200, "OPTIONS")
    allow = {m.strip() for m in (ok.header("Allow") or "").split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= allow
    assert "application/sdp" in (ok.header("Accept") or "")


def test_node_answers_unroutable_invite_404(peers: PeerGroup, node: tuple[Peer, int]) -> None:
    need("sipp")
    _, port = node
    run = peers.sipp("uac_not_found", (LOOPBACK, port), service="nobody")
    assert run.wait() == 0, run.report()
    finals = [m for m in run.messages(received=True) if m.status != 100]
    assert [m.status for m in finals] == [404, 404]
    assert finals[0].to_tag == finals[1].to_tag


def test_node_refuses_an_untrusted_anonymous_invite_403(peers: PeerGroup, node: tuple[Peer, int]) -> None:
    need("sipp")
    _, port = node
    run = peers.sipp("uac_inbound_refused", (LOOPBACK, port), service="+15551230000", extra=["-i", "127.0.0.2"])
    assert run.wait() == 0, run.report()
    assert [m.status for m in run.messages(received=True) if m.status != 100] == [403]


def test_node_registers_sipp(peers: PeerGroup, node: tuple[Peer, int]) -> None:
    need("sipp")
    _, port = node
    run = peers.sipp("uac_register", (LOOPBACK, port), timeout=5.0)
    assert run.wait() == 0, run.report()
    statuses = [m.status for m in run.messages(received=True)]
    assert statuses == [401, 200, 200]


def test_node_registers_baresip(peers: PeerGroup, node: tuple[Peer, int]) -> None:
    need("baresip")
    _, port = node
    phone = peers.baresip(f"<sip:alice@{LOOPBACK}:{port}>;auth_pass=secret;regint=600;audio_codecs=PCMU")
    line = phone.wait_registered(timeout=5.0)
    assert "[1 binding]" in line
