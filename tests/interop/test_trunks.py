"""Outbound trunks end to end: SIPp peers play two carriers behind ``CALLPLANE_OUTBOUND_PROXY`` (issue 9).

A whole node (:class:`tests.engine.enginenode.EngineNode`) calls numbers through carrier A then carrier B. What is
judged is what a user and the carriers see: the call record, the status callbacks (names, order), and the SIP
messages each SIPp carrier received (how many INVITEs, which Call-ID, which credentials).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callplane.sip.transaction import TimerConfig
from tests.engine.enginenode import EngineNode
from tests.interop.conftest import sipp_callee as carrier
from tests.interop.conftest import sipp_done as finished
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun, TraceMessage, digest_response, free_port, parse_digest
from tests.webapp import Answer, WebApp

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db", ["sqlite"], indirect=True)]

NUMBER = "+15551234567"
ALL_EVENTS = "initiated,ringing,answered,completed"


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    """The developer's server: status callbacks, and RCML that hangs up after 1 s (if the carrier has not)."""
    async with WebApp() as web:
        web.route("/status", Answer(200))
        web.route("/rcml", Answer.xml("<Response><Pause length='1'/></Response>"))
        yield web


def proxy(run: SippRun, transport: str = "") -> str:
    return f"sip:{LOOPBACK}:{run.port}{transport}"


def trunks(*runs: SippRun | str) -> str:
    return ",".join(r if isinstance(r, str) else proxy(r) for r in runs)


def received(run: SippRun) -> list[TraceMessage]:
    return run.messages(received=True)


def stopped(run: SippRun) -> list[TraceMessage]:
    """What a SIPp peer that should have got nothing received, read after it stopped (its log is complete)."""
    run.peer.stop()
    return received(run)


def invites(run: SippRun) -> list[TraceMessage]:
    return [m for m in received(run) if m.method == "INVITE"]


def statuses(app: WebApp) -> list[tuple[str | None, str | None]]:
    return [(s.param("CallStatus"), s.param("SequenceNumber")) for s in app.requests("/status")]


def node(db: Any, tmp_path: Path, proxies: str, **outbound: Any) -> EngineNode:
    timers = outbound.pop("timers", None)
    return EngineNode(db, tmp_path, outbound_proxy=proxies, outbound=outbound, timers=timers)


async def call(n: EngineNode, app: WebApp, **fields: str) -> str:
    fields = {"To": NUMBER, "StatusCallback": app.url("/status"), "StatusCallbackEvent": ALL_EVENTS, **fields}
    r = await n.post_call(Url=app.url("/rcml"), **fields)
    assert r.status_code == 200, r.text
    sid: str = r.json()["sid"]
    return sid


# -- fail-over --------------------------------------------------------------------------------------------------
async def test_a_503_from_trunk_a_sends_the_same_call_to_trunk_b(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    a, b = carrier(peers, "uas_unavailable"), carrier(peers, "uas_answer_bye")
    async with node(db, tmp_path, trunks(a, b)) as n:
        sid = await call(n, app)
        record = await n.wait_status(sid, "completed")
        await app.wait_for("/status", count=4)
    await finished(a)
    await finished(b)
    assert statuses(app) == [("initiated", "0"), ("ringing", "1"), ("answered", "2"), ("completed", "3")]
    assert {s.param("CallSid") for s in app.requests("/status")} == {sid}
    assert (record.to, record.status, record.direction) == (NUMBER, "completed", "outbound-api")
    assert [m.method for m in received(a)] == ["INVITE", "ACK"]  # exactly one INVITE, and the 503 ACKed
    (first,), (second,) = invites(a), invites(b)
    assert first.request_uri == f"sip:{NUMBER}@{LOOPBACK}:{a.port}"
    assert second.request_uri == f"sip:{NUMBER}@{LOOPBACK}:{b.port}"
    assert (second.header("To") or "").startswith(f"<sip:{NUMBER}@{LOOPBACK}:{b.port}>")
    assert first.header("X-RestComm-CallSid") == second.header("X-RestComm-CallSid") == sid
    assert first.call_id != second.call_id and first.from_tag != second.from_tag
    assert (first.header("From") or "").startswith(f"<sip:+15550001111@{LOOPBACK}:{n.sip_port}>")
    assert [m.method for m in received(b)] == ["INVITE", "ACK", "BYE"]  # its BYE answered 200


async def test_a_silent_trunk_a_fails_over_when_the_invite_times_out(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """T1 = 50 ms makes Timer B 3.2 s: A gets the INVITE and its retransmissions, then B gets the call."""
    a, b = carrier(peers, "uas_silent", extra=["-d", "4500"]), carrier(peers, "uas_answer_bye")
    async with node(db, tmp_path, trunks(a, b), timers=TimerConfig(t1=0.05)) as n:
        sid = await call(n, app)
        await n.wait_status(sid, "completed", timeout=15)
        await app.wait_for("/status", count=4)
    await finished(a)
    await finished(b)
    assert statuses(app) == [("initiated", "0"), ("ringing", "1"), ("answered", "2"), ("completed", "3")]
    copies = invites(a)
    assert len(copies) == 7 and len({(m.branch, m.call_id) for m in copies}) == 1  # one transaction, Timer A
    (second,) = invites(b)
    assert second.header("X-RestComm-CallSid") == sid and second.call_id != copies[0].call_id


async def test_an_unreachable_tcp_trunk_fails_over_at_once(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    b = carrier(peers, "uas_answer_bye")
    dead = f"sip:{LOOPBACK}:{free_port()};transport=tcp"  # nothing listens: the connection is refused
    async with node(db, tmp_path, trunks(dead, b)) as n:
        sid = await call(n, app)
        await n.wait_status(sid, "completed")
    await finished(b)
    assert invites(b)[0].header("X-RestComm-CallSid") == sid


async def test_the_ring_timeout_counts_from_the_first_invite(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """A times out after 3.2 s; B rings; the 5 s Timeout ends the call about 1.8 s into B's ringing."""
    a, b = carrier(peers, "uas_silent", extra=["-d", "4500"]), carrier(peers, "uas_cancel")
    async with node(db, tmp_path, trunks(a, b), timers=TimerConfig(t1=0.05)) as n:
        sid = await call(n, app, Timeout="5")
        record = await n.wait_status(sid, "no-answer", timeout=15)
        await app.wait_for("/status", count=3)
    await finished(a)
    await finished(b)
    assert statuses(app) == [("initiated", "0"), ("ringing", "1"), ("completed", "3")]
    assert record.ring_duration == 5
    assert [m.method for m in received(b)] == ["INVITE", "CANCEL", "ACK"]


async def test_a_busy_trunk_is_the_outcome_and_not_retried(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    a, b = carrier(peers, "uas_busy"), carrier(peers, "uas_answer_bye")
    async with node(db, tmp_path, trunks(a, b)) as n:
        sid = await call(n, app)
        await n.wait_status(sid, "busy")
        await app.wait_for("/status", count=3)
        await asyncio.sleep(0.5)
    await finished(a)
    assert statuses(app) == [("initiated", "0"), ("ringing", "1"), ("completed", "3")]
    assert [m.method for m in received(a)] == ["INVITE", "ACK"]
    assert stopped(b) == []


async def test_after_n_failures_trunk_a_is_skipped_for_new_calls(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """With 2 failures allowed, calls 1 and 2 try A then B; call 3 goes straight to B; A got two INVITEs."""
    a = carrier(peers, "uas_unavailable", calls=2)
    b = carrier(peers, "uas_answer_bye", calls=3)
    async with node(db, tmp_path, trunks(a, b), outbound_proxy_failures=2, outbound_proxy_retry=60.0) as n:
        sids = []
        for _ in range(3):
            sids.append(await call(n, app))
            await n.wait_status(sids[-1], "completed")
        await finished(a)
    await finished(b)
    assert len(invites(a)) == 2
    assert [m.header("X-RestComm-CallSid") for m in invites(a)] == sids[:2]
    assert [m.header("X-RestComm-CallSid") for m in invites(b)] == sids


# -- digest to the trunk ----------------------------------------------------------------------------------------
async def test_a_trunk_challenging_with_401_gets_the_outbound_credentials(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    trunk = carrier(peers, "uas_auth401")  # SIPp's verifyauth checks alice/secret itself
    async with node(db, tmp_path, proxy(trunk), outbound_username="alice", outbound_password="secret") as n:
        sid = await call(n, app)
        await n.wait_status(sid, "completed")
    await finished(trunk)
    assert [m.method for m in received(trunk)] == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
    first, second = invites(trunk)
    check_digest(second, "Authorization", "MD5", f"sip:{NUMBER}@{LOOPBACK}:{trunk.port}")
    assert first.header("Authorization") is None and second.call_id == first.call_id


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_a_trunk_challenging_with_407_gets_the_outbound_credentials(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp, algorithm: str
) -> None:
    trunk = carrier(peers, "uas_auth407", keys={"algorithm": algorithm})
    async with node(db, tmp_path, proxy(trunk), outbound_username="alice", outbound_password="secret") as n:
        sid = await call(n, app)
        await n.wait_status(sid, "completed")
    await finished(trunk)
    assert [m.method for m in received(trunk)] == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
    check_digest(invites(trunk)[1], "Proxy-Authorization", algorithm, f"sip:{NUMBER}@{LOOPBACK}:{trunk.port}")


async def test_the_trunk_credentials_go_to_no_other_uri(db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    """A SIP URI that is not a trunk challenges: it gets no credentials, and the call fails."""
    trunk = carrier(peers, "uas_answer_bye")
    other = carrier(peers, "uas_auth401", timeout=3.0)
    async with node(db, tmp_path, proxy(trunk), outbound_username="alice", outbound_password="secret") as n:
        sid = await call(n, app, To=f"sip:bob@{LOOPBACK}:{other.port}")
        await n.wait_status(sid, "failed")
        await asyncio.sleep(0.5)
    assert [m.method for m in stopped(other)] == ["INVITE", "ACK"]
    assert stopped(trunk) == []


def check_digest(invite: TraceMessage, header: str, algorithm: str, uri: str) -> None:
    value = invite.header(header)
    assert value is not None, f"no {header} in {invite}"
    params = parse_digest(value)
    assert (params["username"], params["realm"], params["uri"]) == ("alice", "callplane.test", uri)
    assert params.get("algorithm", "MD5").upper() == algorithm and params["qop"] == "auth"
    assert params["response"] == digest_response(params, "INVITE", "secret")


# -- From -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("from_", "sent"),
    [
        ("+1 555 000 1111", "<sip:+15550001111@{node}>"),
        ("tel:+15550001111", "<tel:+15550001111>"),
        ("client:alice", "<sip:alice@{node}>"),
        ("alice@example.com", "<sip:alice@example.com>"),
        ("sip:alice@example.com;user=phone", "<sip:alice@example.com;user=phone>"),
    ],
)
async def test_the_from_of_a_trunk_call(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp, from_: str, sent: str
) -> None:
    trunk = carrier(peers, "uas_busy")
    async with node(db, tmp_path, proxy(trunk)) as n:
        sid = await call(n, app, From=from_)
        await n.wait_status(sid, "busy")
    await finished(trunk)
    (invite,) = invites(trunk)
    assert (invite.header("From") or "").startswith(sent.format(node=f"{LOOPBACK}:{n.sip_port}") + ";tag=")


@pytest.mark.parametrize("from_", ["alice smith", "client:", "sip:", "<sip:alice@x>", "a:b"])
async def test_a_from_that_makes_no_uri_is_refused(db: Any, tmp_path: Path, peers: PeerGroup, from_: str) -> None:
    trunk = carrier(peers, "uas_busy")
    async with node(db, tmp_path, proxy(trunk)) as n:
        r = await n.post_call(To=NUMBER, From=from_, Url="http://127.0.0.1:9/rcml")
        assert r.status_code == 400, r.text
        assert r.json()["code"] == 21212 and repr(from_) in r.json()["message"]
        assert (await n.get("Calls.json"))["calls"] == []
    assert stopped(trunk) == []


async def test_an_unresolvable_trunk_fails_over_every_time(
    db: Any, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """The first call waits for the failed lookup; the second, placed while that failure is cached (1 s), fails at
    once inside the send. Both go to B."""
    b = carrier(peers, "uas_answer_bye", calls=2)
    async with node(db, tmp_path, trunks("sip:trunk-a.invalid", b)) as n:
        first = await call(n, app)
        await n.wait_status(first, "ringing", "in-progress", "completed")
        second = await call(n, app)
        await n.wait_status(first, "completed")
        await n.wait_status(second, "completed", timeout=5)
    await finished(b)
    assert [m.header("X-RestComm-CallSid") for m in invites(b)] == [first, second]
