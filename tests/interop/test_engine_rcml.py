"""RCML on real calls: the node fetches the developer's RCML and runs it against SIPp and baresip callees (issue 8).

Judged: the RCML requests the web app received (method, parameters), what the callee got (BYE, audio), the action
parameters (Digits, RecordingUrl...), the recording's audio (FFT), Notifications, and live call modification.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callplane.media.sources import tone_pcm
from callplane.store import notifications
from callplane.store.db import Database
from callplane.store.listing import ListQuery
from tests.engine.enginenode import ACCOUNT, INSTANCE, PUBLIC_URL, EngineNode
from tests.interop.conftest import need
from tests.interop.conftest import sipp_callee as callee
from tests.interop.conftest import sipp_done as finished
from tests.interop.peers import LOOPBACK, PeerGroup
from tests.interop.test_media_calls import baresip as recording_baresip
from tests.interop.test_media_calls import dominant_hz
from tests.webapp import Answer, WebApp

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db", ["sqlite"], indirect=True)]

HANGUP = "<Response><Hangup/></Response>"


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        a.route("/hangup", Answer.xml(HANGUP))
        yield a


async def test_say_then_hangup_and_the_rcml_request(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    app.route("/rcml", Answer.xml("<Response><Say>Hello.</Say><Hangup/></Response>"))
    uas = callee(peers, "uas_answer")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        record = await node.wait_status(sid, "completed", timeout=15)
    await finished(uas)
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "ACK", "BYE"]
    (fetch,) = app.requests("/rcml")
    assert fetch.method == "POST"
    assert fetch.form[:8] == [
        ("CallSid", sid),
        ("InstanceId", INSTANCE),
        ("AccountSid", ACCOUNT),
        ("From", "+15550001111"),
        ("To", "bob"),
        ("CallStatus", "in-progress"),
        ("ApiVersion", "2012-04-24"),
        ("Direction", "outbound-api"),
    ]
    assert record.duration is not None and record.duration >= 1  # the prompt played before the hang-up


async def test_gather_collects_rfc4733_digits_sent_during_the_prompt(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    app.route(
        "/rcml",
        Answer.xml(
            "<Response><Gather action='/digits' method='GET' timeout='5'>"
            "<Say loop='0'>Please enter your code, then press pound.</Say></Gather>"
            "<Say>Nothing was entered.</Say></Response>"
        ),
    )
    app.route("/digits", Answer.xml(HANGUP))
    uas = callee(peers, "media_uas_dtmf")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        (action,) = await app.wait_for("/digits", timeout=10)
        await node.wait_status(sid, "completed")
    await finished(uas)
    assert action.method == "GET"
    assert action.param("Digits") == "15"
    assert action.param("CallSid") == sid


async def test_record_a_known_tone(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    need("baresip")
    app.route("/rcml", Answer.xml("<Response><Record action='/recorded' maxLength='2' playBeep='false'/></Response>"))
    app.route("/recorded", Answer.xml(HANGUP))
    phone = peers.baresip(f"<sip:bob@{LOOPBACK}>;regint=0;answermode=auto;audio_codecs=PCMU", audio_seconds=8.0)
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{phone.sip_port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        (action,) = await app.wait_for("/recorded", timeout=15)
        await node.wait_status(sid, "completed")
        url = action.param("RecordingUrl") or ""
        assert url.startswith(f"{PUBLIC_URL}/2012-04-24/Accounts/{ACCOUNT}/Recordings/RE")
        assert 1.5 <= float(action.param("RecordingDuration") or 0) <= 2.1
        assert action.param("Digits") == ""
        audio = await node.fetch(url)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        listed = await node.get(f"Calls/{sid}/Recordings.json")
        assert [x["sid"] for x in listed["recordings"]] == [url.rsplit("/", 1)[1].removesuffix(".wav")]
    with wave.open(io.BytesIO(audio.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    loud = pcm[np.abs(pcm) > 500]
    assert len(loud) > 4000, "the recording is silent"
    assert abs(dominant_hz(pcm[-8000:]) - 440.0) < 10.0


async def test_fallback_url_after_a_500_and_a_notification(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    app.route("/broken", Answer(500, b"oops"))
    uas = callee(peers, "uas_answer")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(
            To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/broken"), FallbackUrl=app.url("/hangup")
        )
        sid = r.json()["sid"]
        await node.wait_status(sid, "completed", timeout=10)
        await node.writer.flush()
        _, notes = await notifications.list_page(db, ACCOUNT, ListQuery(), call_sid=sid)
        listed = await node.get(f"Calls/{sid}/Notifications.json")
    await finished(uas)
    assert [s.path for s in app.seen] == ["/broken", "/hangup"]
    assert app.seen[0].form == app.seen[1].form
    assert [(n.error_code, n.request_url) for n in notes] == [(11200, app.url("/broken"))]
    assert "HTTP 500" in notes[0].message_text
    assert listed["total"] == 1 and listed["notifications"][0]["error_code"] == 11200


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<Response><Say>&b;</Say></Response>",
        b"<Response>" + b"<Pause>" * 10_000 + b"</Pause>" * 10_000 + b"</Response>",
        b"<Response><Say>" + b"x" * (10 << 20) + b"</Say></Response>",
        b"<Html><Say>hi</Say></Html>",
        b"",
        b"<Response><Dance/></Response>",
    ],
    ids=["entities", "deep", "10MiB", "root", "empty", "unknown-verb"],
)
async def test_hostile_rcml_gets_a_notification_and_a_clean_hangup(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, body: bytes
) -> None:
    app.route("/evil", Answer(200, body, "application/xml"))
    uas = callee(peers, "uas_answer")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/evil"))
        sid = r.json()["sid"]
        await node.wait_status(sid, "completed", timeout=15)
        await node.writer.flush()
        total, notes = await notifications.list_page(db, ACCOUNT, ListQuery(), call_sid=sid)
    await finished(uas)
    assert [m.method for m in uas.messages(received=True)] == ["INVITE", "ACK", "BYE"]
    assert total >= 1 and all(n.error_code > 0 for n in notes)


async def test_lcm_url_during_a_pause_and_mute(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    app.route("/rcml", Answer.xml("<Response><Pause length='30'/></Response>"))
    uas = callee(peers, "uas_answer")
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{uas.port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        await app.wait_for("/rcml")
        muted = await node.modify(sid, Mute="true")
        assert muted.status_code == 200 and muted.json()["status"] == "in-progress"
        live = node.engine.live(sid)
        assert live is not None and live.leg is not None
        assert node.media.leg(live.leg).muted
        loop = asyncio.get_running_loop()
        started = loop.time()
        moved = await node.modify(sid, Url=app.url("/hangup"), Method="GET")
        assert moved.status_code == 200
        await node.wait_status(sid, "completed", timeout=5)
        assert loop.time() - started < 3.0
    await finished(uas)
    (redirect,) = app.requests("/hangup")
    assert redirect.method == "GET" and redirect.param("CallSid") == sid


async def test_play_and_say_reach_the_callee(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    """baresip records what it hears: a WAV served by the web app played twice, then a spoken sentence."""
    need("baresip", "espeak-ng")
    tone = io.BytesIO()
    with wave.open(tone, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone_pcm([600.0], 1.0, 0.3))
    app.route("/tone.wav", Answer(200, tone.getvalue(), "audio/wav"))
    app.route(
        "/rcml", Answer.xml("<Response><Play loop='2'>tone.wav</Play><Say>Goodbye and thank you.</Say></Response>")
    )
    phone = recording_baresip(peers, tmp_path)
    async with EngineNode(db, tmp_path) as node:
        r = await node.post_call(To=f"sip:bob@{LOOPBACK}:{phone.sip_port}", Url=app.url("/rcml"))
        sid = r.json()["sid"]
        record = await node.wait_status(sid, "completed", timeout=20)
    await asyncio.to_thread(phone.peer.wait_output, r"terminated \(duration", 5.0)
    rate, heard = phone.dumps()["dec"]
    assert len(app.requests("/tone.wav")) == 1  # fetched once, played twice
    first_two = heard[: 2 * rate]
    loud = np.flatnonzero(np.abs(heard) > 1000)
    assert len(loud) and abs(dominant_hz(heard[loud[0] : loud[0] + 2 * rate], rate) - 600.0) < 15.0
    speech = heard[loud[0] + int(2.2 * rate) :]
    assert np.sqrt(np.mean(speech.astype(np.float64) ** 2)) > 300.0  # the sentence, not silence
    assert len(first_two) == 2 * rate and record.duration is not None and record.duration >= 3
