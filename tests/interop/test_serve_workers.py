"""``callplane serve --workers 2`` as a user runs it: one HTTP port, calls spread over two worker processes.

The kernel hands each new HTTP connection to either worker (SO_REUSEPORT). A live call runs in the worker that
placed it, so modifying it through a connection that landed on the other worker must be forwarded there; a worker
that dies is started again and closes the calls its previous life left; SIGTERM stops the whole node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from callplane.store import registrations
from callplane.store.db import Database
from callplane.store.registrations import BindingRow
from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun
from tests.interop.test_serve_calls import ACCOUNT, TOKEN, Node, start_node
from tests.webapp import Answer, WebApp

pytestmark = pytest.mark.interop


@contextlib.asynccontextmanager
async def _rig(tmp_path: Path, peers: PeerGroup, pause: int) -> AsyncIterator[tuple[PeerGroup, WebApp, SippRun]]:
    """A group for the node, a web app whose RCML pauses ``pause`` seconds, and a SIPp callee answering 30 calls."""
    need("sipp")
    group = PeerGroup(tmp_path / "node")
    async with WebApp() as app:
        app.route("/rcml", Answer.xml(f"<Response><Pause length='{pause}'/></Response>"))
        app.route("/status", Answer(204))
        uas = peers.sipp("uas_answer", calls=30, timeout=pause + 30.0)
        try:
            yield group, app, uas
        finally:
            group.close()
    uas.peer._signal(signal.SIGTERM)


def _children(pid: int) -> dict[int, int]:
    """worker index -> pid, from the supervisor's child processes' command lines."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--worker" in argv:
                found[int(argv[argv.index(b"--worker") + 1])] = int(child)
    return found


def _node_id(node: Node) -> str:
    match = re.search(r"HTTP API on \S+ \(InstanceId (ID[0-9a-f]{32}), 2 workers\)", node.proc.output())
    assert match, node.proc.output()
    return match.group(1)


async def _place(node: Node, app: WebApp, uas_port: int) -> str:
    """One call through a new connection (so the kernel picks a worker afresh); its sid."""
    async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
        r = await client.post(
            node.calls_url,
            data={
                "From": "16175551212",
                "To": f"sip:bob@{LOOPBACK}:{uas_port}",
                "Url": app.url("/rcml"),
                "StatusCallback": app.url("/status"),
            },
        )
    assert r.status_code == 200, r.text
    sid: str = r.json()["sid"]
    return sid


async def _status(node: Node, sid: str) -> str:
    async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
        r = await client.get(node.calls_url.replace("Calls.json", f"Calls/{sid}.json"))
    status: str = r.json()["status"]
    return status


async def _until(node: Node, sid: str, status: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while await _status(node, sid) != status:
            await asyncio.sleep(0.1)


async def _register_alice(data: Path, port: int) -> None:
    """Client alice of the administrator is registered at a SIPp on ``port`` (as worker 0's registrar stores it)."""
    db = Database(f"sqlite+aiosqlite:///{data / 'callplane.db'}")
    try:
        aor, contact = f"sip:alice@{LOOPBACK}", f"<sip:alice@{LOOPBACK}:{port}>"
        binding = BindingRow(aor, contact, 4_000_000_000, "c1", 1, account_sid=ACCOUNT)
        await registrations.apply(db, aor, [binding], [])
    finally:
        await db.close()


async def test_two_workers_share_the_port_and_forward_live_call_modification(tmp_path: Path, peers: PeerGroup) -> None:
    async with _rig(tmp_path, peers, 30) as (group, app, uas):
        node = start_node(group, tmp_path / "data", workers=2)
        node_id = _node_id(node)
        sids: list[str] = []
        for _ in range(24):  # until both workers have a call (each new connection is a coin toss)
            sids.append(await _place(node, app, uas.port))
            if len({sid[:34] for sid in sids}) == 2 and len(sids) >= 4:
                break
        owners = {sid[:34] for sid in sids}
        assert len(owners) == 2 and node_id in owners, sids  # worker 0 keeps the node's InstanceId
        for sid in sids:
            await _until(node, sid, "in-progress")
        # Hang each call up through fresh connections: about half land on the worker that does not run it.
        async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
            xml = await client.post(
                node.calls_url.replace("Calls.json", f"Calls/{sids[0]}"), data={"Status": "completed"}
            )
        assert xml.status_code == 200, xml.text
        assert xml.headers["content-type"].startswith("application/xml")
        assert f"<Sid>{sids[0]}</Sid>" in xml.text and "<Status>completed</Status>" in xml.text
        for sid in sids[1:]:
            async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
                r = await client.post(
                    node.calls_url.replace("Calls.json", f"Calls/{sid}.json"), data={"Status": "completed"}
                )
            assert r.status_code == 200, r.text
            assert (r.json()["sid"], r.json()["status"]) == (sid, "completed")
        # A wrong token is refused by whichever worker answers, forwarded or not.
        async with httpx.AsyncClient(auth=(ACCOUNT, "wrong-token-0123456")) as client:
            r = await client.post(
                node.calls_url.replace("Calls.json", f"Calls/{sids[-1]}.json"), data={"Status": "completed"}
            )
        assert r.status_code == 401
        supervisor = node.proc.pid
        workers = _children(supervisor)
        assert sorted(workers) == [0, 1]
        node.proc._signal(signal.SIGTERM)  # to the process group, as Ctrl-C in a terminal
        assert node.proc.wait(30) == 0, node.proc.output()
        assert "starting it again" not in node.proc.stderr()  # workers ending on the signal are not restarted
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers.values())
    # Every call got our BYE, from the worker that placed it.
    byes = [m for m in uas.messages(received=True) if m.is_request and m.method == "BYE"]
    assert len(byes) == len(sids), uas.report()


async def test_a_worker_killed_mid_call_is_started_again_and_closes_its_call(tmp_path: Path, peers: PeerGroup) -> None:
    async with _rig(tmp_path, peers, 60) as (group, app, uas):
        node = start_node(group, tmp_path / "data", workers=2)
        node_id = _node_id(node)
        sid = ""
        for _ in range(24):
            sid = await _place(node, app, uas.port)
            if not sid.startswith(node_id):
                break
        assert not sid.startswith(node_id), "no call landed on worker 1"
        await _until(node, sid, "in-progress")
        await asyncio.sleep(1.2)
        workers = _children(node.proc.pid)
        os.kill(workers[1], signal.SIGKILL)
        node.proc.wait_output(r"worker 1 stopped \(exit -9\); starting it again", timeout=10)
        await _until(node, sid, "completed", timeout=60)  # the new worker 1 closes its predecessor's call
        seen = await app.wait_for("/status", count=1, timeout=30)
        done = [s for s in seen if s.param("CallSid") == sid]
        assert done and done[0].param("CallStatus") == "completed"
        assert int(done[0].param("CallDuration") or 0) >= 2
        assert _children(node.proc.pid)[1] != workers[1]


async def test_after_a_crash_one_worker_closes_every_workers_calls_and_a_lone_worker_stops_with_its_supervisor(
    tmp_path: Path, peers: PeerGroup
) -> None:
    """The whole node dies (kill -9) with calls on both workers; it comes back with one worker, which ends both calls
    and delivers both ``completed`` callbacks. Then a worker whose supervisor is killed stops by itself."""
    data = tmp_path / "data"
    async with _rig(tmp_path, peers, 60) as (group, app, uas):
        node = start_node(group, data, workers=2)
        node_id = _node_id(node)
        placed: list[str] = []
        for _ in range(24):
            placed.append(await _place(node, app, uas.port))
            if len({sid.startswith(node_id) for sid in placed}) == 2:
                break
        assert len({sid.startswith(node_id) for sid in placed}) == 2, "the calls did not land on both workers"
        for sid in placed:
            await _until(node, sid, "in-progress")
        await asyncio.sleep(1.2)
        workers = _children(node.proc.pid)
        for pid in (*workers.values(), node.proc.pid):
            os.kill(pid, signal.SIGKILL)
        node.proc.wait(5)
        node = start_node(group, data, workers=1)
        for sid in placed:
            await _until(node, sid, "completed", timeout=30)
        async with asyncio.timeout(30):
            while sorted(s.param("CallSid") or "" for s in app.requests("/status")) != sorted(placed):
                await asyncio.sleep(0.2)
        for seen in app.requests("/status"):
            assert seen.param("CallStatus") == "completed" and int(seen.param("CallDuration") or 0) >= 2
        node.proc._signal(signal.SIGTERM)
        assert node.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled

        node = start_node(group, data, workers=2)
        workers = _children(node.proc.pid)
        os.kill(node.proc.pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            while any(Path(f"/proc/{pid}").exists() for pid in workers.values()):
                await asyncio.sleep(0.2)


async def test_calls_to_a_client_are_placed_by_the_worker_that_holds_the_sip_port(
    tmp_path: Path, peers: PeerGroup
) -> None:
    """Clients register on worker 0's port (and may hold a TCP connection there): POST Calls to ``client:`` that
    reaches worker 1 is forwarded, so every such call is worker 0's and its INVITE leaves from the --sip port."""
    need("sipp")
    group = PeerGroup(tmp_path / "node")
    phone = peers.sipp("uas_busy", calls=8, timeout=60.0)
    async with WebApp() as app:
        app.route("/rcml", Answer.xml("<Response><Hangup/></Response>"))
        try:
            node = start_node(group, tmp_path / "data", workers=2)
            node_id = _node_id(node)
            await _register_alice(tmp_path / "data", phone.port)
            sids = []
            for _ in range(8):
                async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
                    r = await client.post(
                        node.calls_url, data={"From": "1555", "To": "client:alice", "Url": app.url("/rcml")}
                    )
                assert r.status_code == 200, r.text
                sids.append(r.json()["sid"])
            assert all(sid.startswith(node_id + "-CA") for sid in sids), sids
            for sid in sids:
                await _until(node, sid, "busy")
        finally:
            group.close()
    invites = [m for m in phone.messages(received=True) if m.is_request and m.method == "INVITE"]
    assert len(invites) == 8
    assert all(f"{LOOPBACK}:{node.sip}" in (m.header("Via") or "") for m in invites)


async def test_each_worker_takes_inbound_calls_on_its_own_sip_port(tmp_path: Path, peers: PeerGroup) -> None:
    """Worker i listens on --sip + i, as the banner says: an INVITE to a number sent there (as a SIP dispatcher in
    front of the node would) runs on that worker, which answers from that port."""
    need("sipp")
    group = PeerGroup(tmp_path / "node")
    async with WebApp() as app:
        app.route("/rcml", Answer.xml("<Response><Say>Hello.</Say><Hangup/></Response>"))
        try:
            node = start_node(group, tmp_path / "data", workers=2, env={"CALLPLANE_TRUSTED_PEERS": "127.0.0.0/8"})
            node_id = _node_id(node)
            banner = f"workers 1-1 also take SIP calls on {LOOPBACK} ports {node.sip + 1}"
            assert banner in node.proc.output(), node.proc.output()
            async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
                r = await client.post(
                    node.url("/IncomingPhoneNumbers.json"),
                    data={"PhoneNumber": "+15551230000", "VoiceUrl": app.url("/rcml")},
                )
                assert r.status_code == 200, r.text
            sids: list[str] = []
            for port in (node.sip, node.sip + 1):
                caller = peers.sipp("uac_inbound", (LOOPBACK, port), service="+15551230000")
                assert await asyncio.to_thread(caller.wait, 20) == 0, caller.report()
                answer = next(m for m in caller.messages(received=True) if m.status == 200)
                assert f"{LOOPBACK}:{port}" in (answer.header("Contact") or "")
                sids.append((await app.wait_for("/rcml", count=len(sids) + 1))[-1].param("CallSid") or "")
        finally:
            group.close()
    assert sids[0].startswith(node_id + "-CA") and not sids[1].startswith(node_id), sids


async def test_a_dial_to_a_client_on_another_worker_rings_its_phone(tmp_path: Path, peers: PeerGroup) -> None:
    """A call that runs on worker 1 (it came in on worker 1's SIP port) and Dials a Client: the Client registered
    with worker 0, yet worker 1 rings the phone itself, since the bridge needs both legs in one worker."""
    need("sipp")
    group = PeerGroup(tmp_path / "node")
    phone = peers.sipp("uas_busy")
    async with WebApp() as app:
        app.route(
            "/rcml",
            Answer.xml(f"<Response><Dial action='{app.url('/action')}'><Client>alice</Client></Dial></Response>"),
        )
        app.route("/action", Answer.xml("<Response><Say>Busy.</Say><Hangup/></Response>"))
        try:
            node = start_node(group, tmp_path / "data", workers=2, env={"CALLPLANE_TRUSTED_PEERS": "127.0.0.0/8"})
            await _register_alice(tmp_path / "data", phone.port)
            async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
                r = await client.post(
                    node.url("/IncomingPhoneNumbers.json"),
                    data={"PhoneNumber": "+15551230000", "VoiceUrl": app.url("/rcml")},
                )
                assert r.status_code == 200, r.text
            caller = peers.sipp("uac_inbound", (LOOPBACK, node.sip + 1), service="+15551230000")
            assert await asyncio.to_thread(caller.wait, 20) == 0, caller.report()
            (action,) = await app.wait_for("/action")
        finally:
            group.close()
    assert action.param("DialCallStatus") == "busy"
    (invite,) = [m for m in phone.messages(received=True) if m.is_request and m.method == "INVITE"]
    assert f"{LOOPBACK}:{node.sip + 1}" in (invite.header("Via") or "")
