"""POST Calls end to end: the real node places SIP calls to SIPp callees and reports them (issue 8).

Each test runs a whole node (:class:`tests.engine.enginenode.EngineNode`) over SQLite, a SIPp callee on loopback
and a real web app (:class:`tests.webapp.WebApp`) for status callbacks. What is judged is what a user sees: the API
answers, the call records, the callbacks the web app received (names, values, order), and the SIP messages SIPp got.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callplane.store import registrations
from callplane.store.db import Database
from callplane.store.registrations import BindingRow
from tests.engine.enginenode import ACCOUNT, INSTANCE, EngineNode
from tests.interop.conftest import sipp_callee as callee
from tests.interop.conftest import sipp_done as finished
from tests.interop.peers import LOOPBACK, PeerGroup
from tests.webapp import Answer, WebApp

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db", ["sqlite"], indirect=True)]

ALL_EVENTS = "initiated,ringing,answered,completed"


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        a.route("/status", Answer(200))
        a.route("/rcml", Answer.xml("<Response><Pause length='30'/></Response>"))
        yield a


def statuses(app: WebApp) -> list[tuple[str | None, str | None]]:
    return [(s.param("CallStatus"), s.param("SequenceNumber")) for s in app.requests("/status")]


async def test_answered_call_reports_every_event_in_order(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    uas = callee(peers, "uas_answer_bye")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}",
            Url=app.url("/rcml"),
            StatusCallback=app.url("/status"),
            StatusCallbackMethod="GET",
            StatusCallbackEvent=ALL_EVENTS,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        sid = body["sid"]
        assert sid.startswith(f"{INSTANCE}-CA") and len(sid) == len(INSTANCE) + 3 + 32
        assert (body["status"], body["direction"], body["to"], body["from"]) == (
            "queued",
            "outbound-api",
            "bob",
            "+15550001111",
        )
        assert body["uri"] == f"/2012-04-24/Accounts/{ACCOUNT}/Calls/{sid}.json"
        assert body["subresource_uris"]["recordings"] == f"/2012-04-24/Accounts/{ACCOUNT}/Calls/{sid}/Recordings.json"
        record = await node.wait_status(sid, "completed")
        await app.wait_for("/status", count=4)
    await finished(uas)
    assert statuses(app) == [("initiated", "0"), ("ringing", "1"), ("answered", "2"), ("completed", "3")]
    completed = app.requests("/status")[-1]
    assert completed.method == "GET"
    assert [k for k, _ in completed.query] == [
        "CallSid",
        "InstanceId",
        "AccountSid",
        "From",
        "To",
        "CallStatus",
        "ApiVersion",
        "Direction",
        "CallerName",
        "ForwardedFrom",
        "CallTimestamp",
        "CallDuration",
        "Timestamp",
        "CallbackSource",
        "SequenceNumber",
    ]
    assert completed.param("CallSid") == sid
    assert completed.param("Direction") == "outbound-api"
    assert completed.param("CallbackSource") == "call-progress-events"
    assert completed.param("CallDuration") == str(record.duration)
    assert completed.param(
        "Timestamp",
    ).endswith("+0000")  # type: ignore[union-attr]
    assert all(s.param("CallDuration") is None for s in app.requests("/status")[:3])
    assert record.start_time is not None and record.end_time is not None
    assert record.duration is not None and 1 <= record.duration <= 2  # SIPp hangs up 0.5 s after the ACK
    assert record.ring_duration is not None and 0 <= record.ring_duration <= 2
    invite = uas.messages(received=True)[0]
    assert invite.header("X-RestComm-CallSid") == sid
    assert invite.header("X-RestComm-AccountSid") == ACCOUNT
    assert invite.header("X-RestComm-ApiVersion") == "2012-04-24"
    assert (invite.header("From") or "").startswith(f"<sip:+15550001111@{LOOPBACK}:")


async def test_only_completed_by_default_and_post_form(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    uas = callee(peers, "uas_answer_bye")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"), StatusCallback=app.url("/status")
        )
        sid = r.json()["sid"]
        await node.wait_status(sid, "completed")
        await app.wait_for("/status")
        await asyncio.sleep(0.3)
    await finished(uas)
    (only,) = app.requests("/status")
    assert only.method == "POST" and only.param("CallStatus") == "completed" and only.param("SequenceNumber") == "3"


async def test_busy_callee(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    uas = callee(peers, "uas_busy")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}",
            Url=app.url("/rcml"),
            StatusCallback=app.url("/status"),
            StatusCallbackEvent=ALL_EVENTS,
        )
        sid = r.json()["sid"]
        record = await node.wait_status(sid, "busy")
        await app.wait_for("/status", count=3)
    await finished(uas)
    assert (record.duration, record.start_time) == (0, None)
    assert statuses(app) == [("initiated", "0"), ("ringing", "1"), ("completed", "3")]
    assert app.requests("/status")[-1].param("CallDuration") == "0"


async def test_ring_timeout_cancels_and_is_no_answer(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    uas = callee(peers, "uas_cancel")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"), Timeout="1")
        sid = r.json()["sid"]
        record = await node.wait_status(sid, "no-answer", timeout=5)
        await finished(uas)
    assert record.duration == 0 and record.end_time is not None
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]


async def test_lcm_cancel_of_a_ringing_call(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    uas = callee(peers, "uas_cancel")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        await node.wait_status(sid, "ringing")
        changed = await node.modify(sid, Status="canceled")
        assert changed.status_code == 200, changed.text
        assert changed.json()["status"] == "canceled"
        await finished(uas)
        again = await node.modify(sid, Status="completed")
        assert again.status_code == 409
        assert "already ended" in again.json()["message"]
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]


async def test_lcm_completed_hangs_up_an_answered_call(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    uas = callee(peers, "uas_answer")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        await node.wait_status(sid, "in-progress")
        changed = await node.modify(sid, Status="completed")
        assert changed.status_code == 200
        body = changed.json()
        assert body["status"] == "completed" and body["duration"] >= 0
        await finished(uas)
        unknown = await node.modify(f"{INSTANCE}-CA{'0' * 32}", Status="completed")
        assert unknown.status_code == 404
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "ACK", "BYE"]


async def test_client_with_two_registrations_rings_both(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    one, two = callee(peers, "uas_busy"), callee(peers, "uas_busy")
    async with EngineNode(db, tmp_path) as node:
        now = node.clock.wall().timestamp()
        await registrations.apply(
            db,
            f"sip:alice@{LOOPBACK}",
            [
                BindingRow(
                    f"sip:alice@{LOOPBACK}",
                    f"<sip:alice@{LOOPBACK}:{run.port}>",
                    now + 600,
                    f"c{run.port}",
                    1,
                    account_sid=ACCOUNT,
                )
                for run in (one, two)
            ],
            [],
        )
        r = await node.post_call(
            To="client:alice?X-Custom-Header1=1234", Url=app.url("/rcml"), **{"X-Custom-Header2": "432"}
        )
        assert r.status_code == 200, r.text
        legs = r.json()
        assert isinstance(legs, list) and len(legs) == 2
        assert {leg["to"] for leg in legs} == {"alice"}
        for leg in legs:
            await node.wait_status(leg["sid"], "busy")
        missing = await node.post_call(To="client:nobody", Url=app.url("/rcml"))
        assert missing.status_code == 404 and "nobody" in missing.json()["message"]
        number = await node.post_call(To="+15551234567", Url=app.url("/rcml"))
        assert number.status_code == 400 and "CALLPLANE_OUTBOUND_PROXY" in number.json()["message"]
    await finished(one)
    await finished(two)
    for run in (one, two):
        invite = run.messages(received=True)[0]
        assert invite.header("X-Custom-Header1") == "1234"
        assert invite.header("X-Custom-Header2") == "432"
        assert invite.request_uri == f"sip:alice@{LOOPBACK}:{run.port}"


async def test_digest_challenge_from_the_callee(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    uas = callee(peers, "uas_auth401")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"), Username="alice", Password="secret"
        )
        sid = r.json()["sid"]
        await node.wait_status(sid, "in-progress", "completed", "failed")
        await node.modify(sid, Status="completed")
    await finished(uas)


async def test_status_callback_retried_after_a_500(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    app.route("/flaky", [Answer(500), Answer(200)])
    uas = callee(peers, "uas_busy")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"), StatusCallback=app.url("/flaky")
        )
        sid = r.json()["sid"]
        await node.wait_status(sid, "busy")
        seen = await app.wait_for("/flaky", count=2, timeout=5)
        assert await node.deliverer.drain(5)
    await finished(uas)
    assert [s.param("CallStatus") for s in seen] == ["completed", "completed"]
    assert seen[0].form == seen[1].form


async def test_a_refused_call_is_failed(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    uas = callee(peers, "uas_reject")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}",
            Url=app.url("/rcml"),
            StatusCallback=app.url("/status"),
            StatusCallbackEvent="initiated,answered,completed",
        )
        sid = r.json()["sid"]
        record = await node.wait_status(sid, "failed")
        await app.wait_for("/status", count=2)
    await finished(uas)
    assert (record.duration, record.start_time) == (0, None)
    assert statuses(app) == [("initiated", "0"), ("completed", "3")]
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "ACK"]
    assert not app.requests("/rcml")


async def test_a_number_goes_through_the_outbound_proxy(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """A SIPp UAS plays the carrier: the number arrives as the Request-URI user at the configured proxy."""
    carrier = callee(peers, "uas_answer_bye")
    async with EngineNode(db, tmp_path, outbound_proxy=f"sip:{LOOPBACK}:{carrier.port}") as node:
        r = await node.post_call(To="+15551234567", Url=app.url("/rcml"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["to"] == "+15551234567"
        await node.wait_status(body["sid"], "completed")
    await finished(carrier)
    invite = carrier.messages(received=True)[0]
    assert invite.request_uri == f"sip:+15551234567@{LOOPBACK}:{carrier.port}"
    assert invite.header("X-RestComm-CallSid") == body["sid"]


async def test_every_failed_callback_delivery_is_a_notification(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    app.route("/refuses", Answer(403, b"forbidden"))
    uas = callee(peers, "uas_busy")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"), StatusCallback=app.url("/refuses")
        )
        sid = r.json()["sid"]
        await node.wait_status(sid, "busy")
        await app.wait_for("/refuses")
        assert await node.deliverer.drain(5)
        await node.writer.flush()
        listed = await node.get(f"Calls/{sid}/Notifications.json")
    await finished(uas)
    assert len(app.requests("/refuses")) == 1  # a 403 is not retried
    (note,) = listed["notifications"]
    assert note["error_code"] == 11200 and note["log"] == 0
    assert note["request_url"] == app.url("/refuses") and "HTTP 403" in note["message_text"]
    assert "CallStatus=completed" in note["request_variables"]
