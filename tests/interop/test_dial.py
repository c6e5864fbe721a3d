"""``<Dial>`` on real calls (issue 9): an API call answered by one SIPp or baresip peer Dials another.

Judged: the action parameters the web app received, what each peer got (INVITE, CANCEL, BYE), the child call
records (``parent_call_sid``, direction, durations), the per-noun status callbacks, and the audio each peer heard.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callplane.store import registrations
from callplane.store.calls import CallRecord
from callplane.store.db import Database
from callplane.store.registrations import BindingRow
from tests.engine.enginenode import ACCOUNT, PUBLIC_URL, EngineNode
from tests.interop.conftest import sipp_callee as callee
from tests.interop.conftest import sipp_done as finished
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun
from tests.interop.test_media_calls import Recorder, dominant_hz
from tests.interop.test_media_calls import baresip as tone_phone
from tests.webapp import Answer, Seen, WebApp

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


async def call(node: EngineNode, app: WebApp, port: int, user: str = "alice") -> str:
    """Place the API call whose RCML (``/rcml``) Dials, to the peer on ``port``; its sid."""
    r = await node.post_call(To=f"sip:{user}@{LOOPBACK}:{port}", Url=app.url("/rcml"))
    assert r.status_code == 200, r.text
    return str(r.json()["sid"])


async def dialed(node: EngineNode, app: WebApp, sid: str) -> tuple[Seen, CallRecord, list[dict[str, Any]]]:
    """Wait for the Dial's action and the parent's end: the action request, the parent's record, its children."""
    (action,) = await app.wait_for("/dialed", timeout=15)
    parent = await node.wait_status(sid, "completed", timeout=10)
    children = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    return action, parent, children


async def all_finished(*runs: SippRun) -> None:
    for run in runs:
        await finished(run)


async def test_the_callee_hangs_up_and_the_action_gets_completed(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_answer_bye")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip>"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        action, parent, children = await dialed(node, app, sid)
    await all_finished(caller, bob)
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
        sid = await call(node, app, caller.port)
        action, parent, (child,) = await dialed(node, app, sid)
    await all_finished(caller, bob)
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
        sid = await call(node, app, caller.port)
        action, _, (child,) = await dialed(node, app, sid)
    await all_finished(caller, trunk)
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
        sid = await call(node, app, caller.port)
        (action,) = await app.wait_for("/dialed", timeout=15)
        await node.wait_status(sid, "completed", timeout=10)
        callbacks = await app.wait_for("/cb", count=7, timeout=10)
        children = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await all_finished(caller, bob, carol)
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


async def hung_up(phone: Recorder) -> None:
    """baresip's dump files are complete once it has torn the call down."""
    await asyncio.to_thread(phone.peer.wait_output, r"terminated \(duration", 10.0)


def loud(pcm: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(np.abs(pcm) > 1000)
    return pcm[idx[0] : idx[-1]] if len(idx) else pcm[:0]


async def test_both_sides_hear_each_other_across_pcmu_and_pcma_and_the_recording_holds_both(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """The caller speaks PCMU at 600 Hz, the callee PCMA at 1000 Hz: each hears the other's tone (FFT), so the
    bridge transcodes; timeLimit ends the child after 3 s; record="true" keeps a two-channel WAV of both tones."""
    alice = tone_phone(peers, tmp_path, hz=600.0, codec="PCMU", name="alice")
    bob = tone_phone(peers, tmp_path, hz=1000.0, codec="PCMA", name="bob")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.sip_port}</Sip>", timeLimit="3", record="true"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, alice.sip_port, "bob")
        action, _, (child,) = await dialed(node, app, sid)
        url = action.param("RecordingUrl") or ""
        assert url.startswith(f"{PUBLIC_URL}/2012-04-24/Accounts/{ACCOUNT}/Recordings/RE")
        audio = await node.fetch(url)
        assert audio.status_code == 200
        listed = await node.get(f"Calls/{sid}/Recordings.json")
        assert [x["sid"] for x in listed["recordings"]] == [url.rsplit("/", 1)[1].removesuffix(".wav")]
    await hung_up(alice)
    await hung_up(bob)
    assert action.param("DialCallStatus") == "completed"
    # The BYE leaves at 3 s after the answer, a few ms late: the duration is rounded up (calls-api).
    assert action.param("DialCallDuration") == str(child["duration"]) and child["duration"] in (3, 4)
    rate, alice_heard = alice.dumps()["dec"]
    heard = loud(alice_heard)
    assert len(heard) > 2 * rate, "alice heard (almost) nothing"
    assert abs(dominant_hz(heard, rate) - 1000.0) < 15.0
    rate, bob_heard = bob.dumps()["dec"]
    heard = loud(bob_heard)
    assert len(heard) > 2 * rate, "bob heard (almost) nothing"
    assert abs(dominant_hz(heard, rate) - 600.0) < 15.0
    with wave.open(io.BytesIO(audio.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 2, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert 2.0 <= len(frames) / 8000 <= 3.5
    assert abs(dominant_hz(loud(frames[:, 0].copy())) - 600.0) < 15.0  # left: the caller
    assert abs(dominant_hz(loud(frames[:, 1].copy())) - 1000.0) < 15.0  # right: the callee


async def test_rfc4733_digits_cross_and_hangup_on_star_ends_the_child(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """The caller presses 1 then *: the callee receives the 1 (relayed), the * hangs the callee up and the
    parent's RCML goes on with the action."""
    caller = callee(peers, "media_uas_star")
    bob = tone_phone(peers, tmp_path, name="bob")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.sip_port}</Sip>", hangupOnStar="true"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        action, _, (child,) = await dialed(node, app, sid)
    await finished(caller)
    await hung_up(bob)
    assert action.param("DialCallStatus") == "completed" and action.param("CallStatus") == "in-progress"
    assert child["status"] == "completed" and child["duration"] is not None and child["duration"] <= 5
    assert [d for d, end in bob.received_events() if end][:1] == ["1"]


async def test_hold_from_the_caller_is_relayed_and_the_caller_hanging_up_ends_the_child(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """The caller re-INVITEs sendonly then sendrecv: the callee gets each offer (and answers recvonly, sendrecv),
    the caller gets those answers back; then the caller hangs up, the callee gets a BYE, and the action (called
    after the end) says completed."""
    caller = callee(peers, "uas_answer_hold")
    bob = callee(peers, "uas_held")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip>"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        action, _, (child,) = await dialed(node, app, sid)
    await all_finished(caller, bob)
    assert [m.method or m.status for m in bob.messages(received=True)] == [
        "INVITE",
        "ACK",
        "INVITE",
        "ACK",
        "INVITE",
        "ACK",
        "BYE",
    ]
    assert action.param("DialCallStatus") == "completed" and action.param("CallStatus") == "completed"
    assert child["status"] == "completed"


@pytest.mark.parametrize(
    ("screen", "status"),
    [("<Pause length='1'/>", "completed"), ("<Hangup/>", "no-answer")],
    ids=["accepted", "refused"],
)
async def test_a_screening_url_runs_on_the_callee_before_the_bridge(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, screen: str, status: str
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_answer")
    app.route("/screen", Answer.xml(f"<Response>{screen}</Response>"))
    app.route("/rcml", dial(f"<Sip url='/screen' method='GET'>sip:bob@{LOOPBACK}:{bob.port}</Sip>", timeLimit="2"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        action, _, (child,) = await dialed(node, app, sid)
    await all_finished(caller, bob)
    (screening,) = app.requests("/screen")
    assert screening.method == "GET"
    assert screening.param("CallSid") == child["sid"] and screening.param("Direction") == "outbound-dial"
    assert screening.param("ParentCallSid") == sid
    assert action.param("DialCallStatus") == status and action.param("DialCallSid") == child["sid"]
    assert child["status"] == "completed"
    if status == "completed":  # screened for 1 s, then bridged until the time limit (2 s after the answer)
        assert action.param("DialCallDuration") in ("2", "3")
    else:
        assert action.param("DialCallDuration") == "0"


async def test_the_caller_hanging_up_while_the_dial_rings_cancels_every_branch(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_cancel")
    carol = callee(peers, "uas_cancel")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip><Sip>sip:carol@{LOOPBACK}:{carol.port}</Sip>"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        await app.wait_for("/rcml")
        async with asyncio.timeout(5):
            while len((await node.get(f"Calls.json?ParentCallSid={sid}&Status=ringing"))["calls"]) < 2:
                await asyncio.sleep(0.05)
        hung = await node.modify(sid, Status="completed")
        assert hung.status_code == 200
        (action,) = await app.wait_for("/dialed", timeout=10)
        children = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await all_finished(caller, bob, carol)
    assert sorted(c["status"] for c in children) == ["canceled", "canceled"]
    for peer in (bob, carol):
        assert [m.method for m in peer.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]
    assert action.param("DialCallStatus") == "canceled" and action.param("CallStatus") == "completed"


async def test_a_client_rings_every_registration_and_the_first_answer_wins(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    desk, mobile = callee(peers, "uas_cancel"), callee(peers, "uas_answer_bye")
    app.route("/rcml", dial("<Client>alice?X-Team=blue</Client>"))
    async with EngineNode(db, tmp_path) as node:
        now = node.clock.wall().timestamp()
        aor = f"sip:alice@{LOOPBACK}"
        bindings = [
            BindingRow(aor, f"<sip:alice@{LOOPBACK}:{run.port}>", now + 600, f"c{run.port}", 1, account_sid=ACCOUNT)
            for run in (desk, mobile)
        ]
        await registrations.apply(db, aor, bindings, [])
        sid = await call(node, app, caller.port, "bob")
        action, _, children = await dialed(node, app, sid)
    await all_finished(caller, desk, mobile)
    assert sorted((c["to"], c["status"]) for c in children) == [("alice", "canceled"), ("alice", "completed")]
    winner = next(c for c in children if c["status"] == "completed")
    assert action.param("DialCallSid") == winner["sid"] and action.param("DialCallStatus") == "completed"
    assert [m.method for m in desk.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]
    for run in (desk, mobile):
        assert run.messages(received=True)[0].header("X-Team") == "blue"


async def bridged(node: EngineNode, parent: str) -> str:
    """Wait until the parent's Dial has a child in progress; its sid."""
    async with asyncio.timeout(10):
        while True:
            calls = (await node.get(f"Calls.json?ParentCallSid={parent}&Status=in-progress"))["calls"]
            if calls:
                return str(calls[0]["sid"])
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["Hangup", "Move", "StayConnected", "MoveConnectedCallLeg"])
async def test_redirecting_the_parent_with_each_child_call_mode(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, mode: str
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_answer")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip>"))
    app.route("/after", Answer.xml("<Response><Pause length='1'/><Hangup/></Response>"))
    fields = {"MoveConnectedCallLeg": "true"} if mode == "MoveConnectedCallLeg" else {"ChildCallMode": mode}
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        child = await bridged(node, sid)
        moved = await node.modify(sid, Url=app.url("/after"), **fields)
        assert moved.status_code == 200, moved.text
        await app.wait_for("/after")
        child_now = await node.record(child)
        await node.wait_status(sid, "completed", timeout=10)
        ended = await node.wait_status(child, "completed", timeout=10)
    await all_finished(caller, bob)
    fetched_by = sorted(s.param("CallSid") or "" for s in app.requests("/after"))
    assert not app.requests("/dialed")  # a redirected Dial reports nothing: its action is not called
    if mode == "Hangup":
        assert child_now.status == "completed" and fetched_by == [sid]
    elif mode == "StayConnected":
        assert child_now.status == "in-progress" and fetched_by == [sid]
        # It stayed bridged until the parent's new document hung the parent up, 1 s later.
        assert ended.duration is not None and ended.duration >= 1
    else:
        assert sorted(fetched_by) == sorted([sid, child])
        assert child_now.status == "in-progress"


async def test_a_redirect_while_the_dial_rings_cancels_the_branches_and_lcm_on_a_child(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    ringing = callee(peers, "uas_cancel")
    bob = callee(peers, "uas_answer")
    app.route("/rcml", dial(f"<Sip>sip:carol@{LOOPBACK}:{ringing.port}</Sip>"))
    app.route("/second", dial(f"<Sip>sip:bob@{LOOPBACK}:{bob.port}</Sip>"))
    app.route("/bob", Answer.xml("<Response><Pause length='1'/><Hangup/></Response>"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        async with asyncio.timeout(5):
            while not (await node.get(f"Calls.json?ParentCallSid={sid}&Status=ringing"))["calls"]:
                await asyncio.sleep(0.05)
        assert (await node.modify(sid, Url=app.url("/second"))).status_code == 200
        child = await bridged(node, sid)
        # LCM on the child: it leaves the bridge for its own document; the parent's Dial ends, its action runs.
        assert (await node.modify(child, Url=app.url("/bob"))).status_code == 200
        (action,) = await app.wait_for("/dialed", timeout=10)
        (redirect,) = await app.wait_for("/bob", timeout=10)
        await node.wait_status(sid, "completed", timeout=10)
        await node.wait_status(child, "completed", timeout=10)
        children = (await node.get(f"Calls.json?ParentCallSid={sid}"))["calls"]
    await all_finished(caller, ringing, bob)
    assert [m.method for m in ringing.messages(received=True)] == ["INVITE", "CANCEL", "ACK"]
    assert sorted(c["status"] for c in children) == ["canceled", "completed"]
    assert action.param("DialCallSid") == child and action.param("DialCallStatus") == "completed"
    assert redirect.param("CallSid") == child and redirect.param("ParentCallSid") == sid


async def test_a_sip_noun_over_tcp_answers_a_digest_challenge(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    caller = callee(peers, "uas_answer")
    bob = callee(peers, "uas_auth401", transport="t1")
    uri = f"sip:bob@{LOOPBACK}:{bob.port};transport=tcp"
    app.route("/rcml", dial(f"<Sip username='alice' password='secret'>{uri}</Sip>", timeLimit="1"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, caller.port)
        (action,) = await app.wait_for("/dialed", timeout=15)
        await node.wait_status(sid, "completed", timeout=10)
    await finished(caller)
    await finished(bob)  # it checked the digest (verifyauth) before answering
    invites = [m for m in bob.messages(received=True) if m.method == "INVITE"]
    assert len(invites) == 2 and all(m.transport.upper() == "TCP" for m in invites)
    assert action.param("DialCallStatus") == "completed" and action.param("DialSipResponseCode") == "200"


async def test_early_media_from_the_callee_reaches_an_answered_caller(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    """The callee plays an announcement in early media (183 with SDP, PCMA) and then is busy: the caller (PCMU)
    heard the announcement, and the action says busy."""
    alice = tone_phone(peers, tmp_path, name="alice")
    carrier = callee(peers, "uas_early_media")
    app.route("/rcml", dial(f"<Sip>sip:bob@{LOOPBACK}:{carrier.port}</Sip>"))
    async with EngineNode(db, tmp_path) as node:
        sid = await call(node, app, alice.sip_port, "bob")
        action, _, _ = await dialed(node, app, sid)
    await hung_up(alice)
    await finished(carrier)
    assert action.param("DialCallStatus") == "busy"
    rate, heard = alice.dumps()["dec"]
    announcement = loud(heard)
    assert len(announcement) > rate, "the caller heard no early media"
    assert np.sqrt(np.mean(announcement.astype(np.float64) ** 2)) > 300.0
