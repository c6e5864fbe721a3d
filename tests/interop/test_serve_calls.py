"""``callplane serve`` as a user runs it: POST a call over real HTTP, a SIPp callee, a web app serving RCML."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, Peer, PeerError, PeerGroup, free_port, free_port_block, wait_udp_bound
from tests.webapp import Answer, Seen, WebApp

pytestmark = pytest.mark.interop

ACCOUNT = "AC" + "5" * 32
TOKEN = "serve-token-0123456789"


@dataclass
class Node:
    proc: Peer
    sip: int
    http: int

    @property
    def calls_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http}/2012-04-24/Accounts/{ACCOUNT}/Calls.json"

    def url(self, path: str) -> str:
        """``/Clients.json`` -> the administrator account's resource on this node."""
        return f"http://{LOOPBACK}:{self.http}/2012-04-24/Accounts/{ACCOUNT}{path}"


def start_node(group: PeerGroup, data: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> Node:
    sip = free_port() if workers == 1 else free_port_block(workers)  # worker i listens on sip + i
    http, rtp = free_port(), free_port_block(200)
    argv = [sys.executable, "-m", "callplane", "serve", "--sip", f"{LOOPBACK}:{sip}", "--http", f"{LOOPBACK}:{http}"]
    argv += ["--data", str(data), "--rtp-ports", f"{rtp}-{rtp + 199}", "--workers", str(workers)]
    full_env = {
        **os.environ,
        "CALLPLANE_ADMIN_ACCOUNT_SID": ACCOUNT,
        "CALLPLANE_ADMIN_AUTH_TOKEN": TOKEN,
        **(env or {}),
    }
    proc = group.start("callplane-serve", argv, env=full_env)
    try:
        proc.wait_output(r"HTTP API on", timeout=30 * workers)
    except PeerError as exc:
        pytest.fail(f"callplane serve did not start: {exc}")
    wait_udp_bound(sip, timeout=5, peer=proc)
    wait_udp_bound(http, timeout=10, peer=proc, proto="tcp")  # "HTTP API on" is printed just before uvicorn binds
    return Node(proc, sip, http)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    group = PeerGroup(tmp_path / "node")
    try:
        yield start_node(group, tmp_path / "data")
    finally:
        group.close()


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        a.route("/status", Answer(200))
        yield a


async def test_a_user_places_a_call_with_curl_like_requests(node: Node, peers: PeerGroup, app: WebApp) -> None:
    need("sipp")
    app.route("/rcml", Answer.xml("<Response><Say>Hello.</Say><Hangup/></Response>"))
    uas = peers.sipp("uas_answer")
    async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
        r = await client.post(
            node.calls_url,
            data={
                "From": "16175551212",
                "To": f"sip:alice@{LOOPBACK}:{uas.port}",
                "Url": app.url("/rcml", userinfo=f"{ACCOUNT}:{TOKEN}"),
                "StatusCallback": app.url("/status"),
                "StatusCallbackEvent": "initiated,ringing,answered,completed",
            },
        )
        assert r.status_code == 200, r.text
        sid = r.json()["sid"]
        seen = await app.wait_for("/status", count=4, timeout=20)
        assert [s.param("CallStatus") for s in seen] == ["initiated", "ringing", "answered", "completed"]
        call = (await client.get(node.calls_url.replace("Calls.json", f"Calls/{sid}.json"))).json()
    assert await asyncio.to_thread(uas.wait, 10) == 0, uas.report()
    assert call["status"] == "completed" and call["direction"] == "outbound-api" and call["duration"] >= 1
    (rcml,) = app.requests("/rcml")
    assert rcml.headers["authorization"].startswith("Basic ")


async def test_kill_9_mid_call_then_restart_closes_the_record_and_delivers_every_callback(
    tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """The callback server is down while the call runs, then the node is killed: nothing queued may be lost."""
    need("sipp")
    app.route("/rcml", Answer.xml("<Response><Pause length='60'/></Response>"))
    up = False
    accepted: list[Seen] = []

    def status(seen: Seen) -> Answer:
        if not up:
            return Answer(503)
        accepted.append(seen)
        return Answer(200)

    app.route("/status", status)
    uas = peers.sipp("uas_answer", timeout=60.0)
    group = PeerGroup(tmp_path / "node")
    data = tmp_path / "data"
    try:
        node = start_node(group, data)
        async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
            r = await client.post(
                node.calls_url,
                data={
                    "From": "16175551212",
                    "To": f"sip:alice@{LOOPBACK}:{uas.port}",
                    "Url": app.url("/rcml"),
                    "StatusCallback": app.url("/status"),
                    "StatusCallbackEvent": "initiated ringing answered completed",
                },
            )
            sid = r.json()["sid"]
            await app.wait_for("/rcml", timeout=10)
            await app.wait_for("/status", count=2, timeout=10)  # refused: the first try and a retry
            await asyncio.sleep(1.2)  # the call has lasted over a second when it is cut off
            node.proc._signal(9)
            node.proc.wait(5)
            up = True
            node = start_node(group, data)
            async with asyncio.timeout(30):
                while len(accepted) < 4:
                    await asyncio.sleep(0.2)
            call = (await client.get(node.calls_url.replace("Calls.json", f"Calls/{sid}.json"))).json()
    finally:
        group.close()
    assert [s.param("CallStatus") for s in accepted] == ["initiated", "ringing", "answered", "completed"]
    assert {s.param("CallSid") for s in accepted} == {sid}
    assert call["status"] == "completed"
    assert call["duration"] >= 2 and accepted[-1].param("CallDuration") == str(call["duration"])
