"""``<Dial>`` on real calls (issue 9): an API call answered by one SIPp or baresip peer Dials another.

Judged: the action parameters the web app received, what each peer got (INVITE, CANCEL, BYE), the child call
records (``parent_call_sid``, direction, durations), the per-noun status callbacks, and the audio each peer heard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callplane.store.db import Database
from tests.engine.enginenode import ACCOUNT, EngineNode
from tests.interop.conftest import sipp_callee as callee
from tests.interop.conftest import sipp_done as finished
from tests.interop.peers import LOOPBACK, PeerGroup
from tests.webapp import Answer, WebApp

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db", ["sqlite"], indirect=True)]

HANGUP = "<Response><Hangup/></Response>"


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        a.route("/dialed", Answer.xml(HANGUP))
        yield a


def dial(body: str, **attrs: str) -> Answer:
    attributes = "".join(f' {k}="{v}"' for k, v in {"action": "/dialed", **attrs}.items())
    return Answer.xml(f"<Response><Dial{attributes}>{body}</Dial></Response>")


async def test_the_callee_hangs_up_and_the_action_gets_completed(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_answer_bye")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip>"))
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:alice@{LOOPBACK}:{caller.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        (action,) = await app.wait_for("/dialed", timeout=15)
        parent = await node.wait_status(sid, "completed", timeout=10)
        children = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await finished(caller)
    await finished(bob)
    (child,) = children
    assert child["parent_call_sid"] == sid and child["direction"] == "outbound-dial"
    assert child["status"] == "completed" and child["to"] == "bob" and child["from"] == "+15550001111"
    params = dict(action.form)
    assert params["DialCallSid"] == child["sid"]
    assert params["DialCallStatus"] == "completed"
    assert params["DialCallDuration"] == "1"
    assert params["DialRingDuration"] == str(child["ring_duration"])
    assert params["RecordingUrl"] == "null"
    assert params["DialSipResponseCode"] == "200"
    assert params["DialSipCallId"] == bob.messages(received=True)[0].call_id
    assert params["CallSid"] == sid and params["AccountSid"] == ACCOUNT
    assert parent.duration is not None


@pytest.mark.parametrize(
    ("scenario", "attrs", "status"),
    [("uas_busy", {}, "busy"), ("uas_cancel", {"timeout": "2"}, "no-answer"), ("uas_unavailable", {}, "failed")],
    ids=["busy", "no-answer", "failed"],
)
async def test_an_unanswered_dial_gets_exact_action_parameters(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, scenario: str, attrs: dict[str, str], status: str
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, scenario)
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip>", **attrs))
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:alice@{LOOPBACK}:{caller.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        (action,) = await app.wait_for("/dialed", timeout=15)
        parent = await node.wait_status(sid, "completed", timeout=10)
        (child,) = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await finished(caller)
    await finished(bob)
    expected_ring = {"busy": 0, "no-answer": 2, "failed": 0}[status]
    call_id = bob.messages(received=True)[0].call_id
    extra = (
        [("DialSipHeader_X-Carrier-Cause", "34"), ("DialSipHeader_X-Carrier-Name", "test trunk")]
        if status == "failed"
        else []
    )
    code = {"busy": "486", "no-answer": "null", "failed": "503"}[status]  # our CANCEL: its 487 comes later
    assert action.form[-(7 + len(extra)) :] == [
        ("DialCallSid", child["sid"]),
        ("DialCallStatus", status),
        ("DialCallDuration", "0"),
        ("DialRingDuration", str(expected_ring)),
        ("RecordingUrl", "null"),
        ("DialSipCallId", call_id),
        ("DialSipResponseCode", code),
        *extra,
    ]
    assert action.param("CallStatus") == "in-progress"
    assert child["status"] == status and child["duration"] == 0 and child["ring_duration"] == expected_ring
    if status == "no-answer":
        assert [m.method for m in bob.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]
    # The parent's talk time leaves out the time the Dial rang.
    assert parent.duration is not None and parent.duration <= 1


async def test_a_number_goes_through_the_outbound_proxy_with_custom_headers(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    trunk = callee(peers, "uas_answer_bye")
    app.route("/rcml", dial("<Number>+1 555 0002222?X-Account=42</Number>", callerId="+15550009999"))
    async with EngineNode(db, tmp_path, outbound_proxy=f"sip:{LOOPBACK}:{trunk.port}") as node:
        r = await node.post_call(To=f"sip:alice@{LOOPBACK}:{caller.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        (action,) = await app.wait_for("/dialed", timeout=15)
        await node.wait_status(sid, "completed", timeout=10)
        (child,) = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await finished(caller)
    await finished(trunk)
    invite = trunk.messages(received=True)[0]
    assert invite.request_uri.startswith("sip:+15550002222@")
    assert invite.header("X-Account") == "42"
    assert (invite.header("From") or "").startswith("<sip:+15550009999@")
    assert child["to"] == "+15550002222" and child["from"] == "+15550009999"
    assert action.param("DialCallStatus") == "completed" and action.param("DialSipCallId") is None


async def test_forking_the_first_answer_wins_and_per_noun_callbacks(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_answer_bye")
    carol = callee(peers, "uas_cancel")
    app.route("/cb", Answer(200, b""))
    events = 'statusCallbackEvent="initiated,ringing,answered,completed"'
    cb = f'statusCallback="{app.url("/cb")}" {events}'
    app.route(
        "/rcml",
        dial(f"<Sip {cb}>sip:carol@{LOOPBACK}:{carol.port}</Sip><Sip {cb}>sip:bob@{LOOPBACK}:{bob.port}</Sip>"),
    )
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:alice@{LOOPBACK}:{caller.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        (action,) = await app.wait_for("/dialed", timeout=15)
        await node.wait_status(sid, "completed", timeout=10)
        callbacks = await app.wait_for("/cb", count=7, timeout=10)
        children = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await finished(caller)
    await finished(bob)
    await finished(carol)
    by_to = {c["to"]: c for c in children}
    assert {c["to"]: c["status"] for c in children} == {"bob": "completed", "carol": "canceled"}
    assert [m.method for m in carol.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]
    assert action.param("DialCallSid") == by_to["bob"]["sid"]
    seen: dict[str, list[tuple[str, str]]] = {}
    for c in callbacks:
        seen.setdefault(c.param("To") or "", []).append((c.param("CallStatus") or "", c.param("SequenceNumber") or ""))
        assert c.param("ParentCallSid") == sid and c.param("Direction") == "outbound-dial"
    assert seen["bob"] == [("initiated", "0"), ("ringing", "1"), ("answered", "2"), ("completed", "3")]
    assert seen["carol"] == [("initiated", "0"), ("ringing", "1"), ("completed", "3")]
