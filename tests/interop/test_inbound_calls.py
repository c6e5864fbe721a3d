"""Inbound calls (issue 9): SIPp callers INVITE the node, which routes them to a number's or a Client's RCML.

Judged: the final responses the caller received (and that no 200 came where none may), the audio it received, the
RCML requests and number status callbacks the web app received (exact parameters, repeated headers in order),
and the call records.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import time
import wave
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from callplane.core.secrets import digest_ha1
from callplane.engine.inbound import InboundPolicy
from callplane.media.g711 import decode
from callplane.store import calls as store_calls
from callplane.store import clients as store_clients
from callplane.store import notifications
from callplane.store import numbers as store_numbers
from callplane.store.calls import CallQuery, CallRecord
from callplane.store.clients import ClientRecord
from callplane.store.db import Database
from callplane.store.listing import ListQuery
from callplane.store.numbers import NumberRecord
from tests.engine.enginenode import ACCOUNT, INSTANCE, REALM, EngineNode
from tests.interop.conftest import need, sipp_done
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun, TraceMessage, free_port
from tests.interop.test_media_calls import dominant_hz
from tests.webapp import Answer, Seen, WebApp

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db", ["sqlite"], indirect=True)]

NUMBER = "+15551230000"
PN_SID = "PN" + "1" * 32
CL_SID = "CL" + "1" * 32
TRUNK = InboundPolicy((ipaddress.ip_network("127.0.0.0/8"),))
UNTRUSTED = InboundPolicy()
DIVERSIONS = [
    '<tel:+19195551002>;reason=user-busy;screen="yes";privacy="off"',
    '<tel:+19195551001>;reason=unconditional;screen="yes";privacy="full"',
]
HISTORY = "<sip:+19195551001@example.com>;index=1"


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as a:
        a.route("/status", Answer(200))
        yield a


async def provision(db: Database, app: WebApp, *, number: str = NUMBER, rcml: str = "/rcml") -> None:
    now = datetime.now().astimezone()
    await store_numbers.add(
        db,
        NumberRecord(
            PN_SID,
            ACCOUNT,
            now,
            now,
            "main line",
            number,
            voice_url=app.url(rcml),
            voice_fallback_url=None,
            status_callback=app.url("/status"),
        ),
    )


async def add_client(db: Database, app: WebApp, login: str, password: str, *, voice_url: str | None) -> None:
    now = datetime.now().astimezone()
    md5, sha256 = digest_ha1(login, REALM, password)
    await store_clients.add(
        db, ClientRecord(CL_SID, ACCOUNT, now, now, login, login, REALM, md5, sha256, voice_url=voice_url)
    )


def caller(peers: PeerGroup, scenario: str, node: EngineNode, service: str, **kwargs: object) -> SippRun:
    need("sipp")
    return peers.sipp(scenario, (LOOPBACK, node.sip_port), service=service, **kwargs)  # type: ignore[arg-type]


def finals(run: SippRun) -> list[int]:
    """The final responses to INVITEs the caller received."""
    return [
        m.status
        for m in run.messages(received=True)
        if m.status is not None and m.status >= 200 and m.cseq[1] == "INVITE"
    ]


def received(run: SippRun, status: int) -> TraceMessage:
    return next(m for m in run.messages(received=True) if m.status == status and m.cseq[1] == "INVITE")


async def only_call(node: EngineNode) -> CallRecord:
    await node.writer.flush()
    page = await store_calls.list_page(node.db, CallQuery(ACCOUNT))
    (record,) = page.records
    return record


async def no_call(node: EngineNode) -> None:
    await node.writer.flush()
    page = await store_calls.list_page(node.db, CallQuery(ACCOUNT))
    assert page.records == []


def expected_params(seen: Seen, sid: str, status: str, **changes: str) -> list[tuple[str, str]]:
    """The §4.2 parameters of the trunk call of uac_inbound.xml."""
    params = [
        ("CallSid", sid),
        ("InstanceId", INSTANCE),
        ("AccountSid", ACCOUNT),
        ("From", "+15550001111"),
        ("To", NUMBER),
        ("CallStatus", status),
        ("ApiVersion", "2012-04-24"),
        ("Direction", "inbound"),
        ("CallerName", "Alice Smith"),
        ("ForwardedFrom", "+19195551002"),
        ("CallTimestamp", seen.param("CallTimestamp") or "?"),
        ("SipHeader_X-My-Custom-Header", "My Custom Value"),
        ("SipHeader_Diversion", DIVERSIONS[0]),
        ("SipHeader_Diversion", DIVERSIONS[1]),
        ("SipHeader_History-Info", HISTORY),
    ]
    return [(k, changes.get(k, v)) for k, v in params]


class RtpSink(asyncio.DatagramProtocol):
    """Where the caller's SDP says its audio goes: collects the PCMU payloads that arrive."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.arrivals: list[float] = []  # wall-clock time of each payload

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
            self.payloads.append(data[12:])
            self.arrivals.append(time.time())

    def pcm(self) -> np.ndarray:
        return np.frombuffer(b"".join(decode(p, 0) for p in self.payloads), dtype="<i2")


@pytest.fixture
async def rtp() -> AsyncIterator[tuple[int, RtpSink]]:
    port = free_port()
    transport, sink = await asyncio.get_running_loop().create_datagram_endpoint(RtpSink, local_addr=(LOOPBACK, port))
    try:
        yield port, sink
    finally:
        transport.close()


# -- a trunk calls a number ------------------------------------------------------------------------------------
async def test_a_number_answers_says_and_hangs_up_with_exact_parameters(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, rtp: tuple[int, RtpSink]
) -> None:
    app.route("/rcml", Answer.xml("<Response><Say>Welcome to callplane.</Say><Hangup/></Response>"))
    port, sink = rtp
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound", node, NUMBER, keys={"rtp_port": str(port)})
        await sipp_done(run, timeout=20)
        (fetch,) = await app.wait_for("/rcml")
        sid = fetch.param("CallSid") or ""
        record = await node.wait_status(sid, "completed")
        statuses = await app.wait_for("/status", count=3)
    assert fetch.method == "POST"
    assert fetch.form == expected_params(fetch, sid, "ringing")
    assert [s.form for s in statuses] == [
        expected_params(statuses[0], sid, "ringing"),
        expected_params(statuses[1], sid, "in-progress"),
        [*expected_params(statuses[2], sid, "completed"), ("CallDuration", str(record.duration))],
    ]
    assert {s.param("CallTimestamp") for s in statuses} == {fetch.param("CallTimestamp")}
    assert (record.direction, record.phone_number_sid, record.from_, record.to) == (
        "inbound",
        PN_SID,
        "+15550001111",
        NUMBER,
    )
    assert (record.caller_name, record.forwarded_from) == ("Alice Smith", "+19195551002")
    assert record.duration is not None and record.duration >= 1
    assert [m.status or m.method for m in run.messages(received=True)][-2:] == [200, "BYE"]
    assert 180 in [m.status for m in run.messages(received=True)]
    pcm = sink.pcm()
    assert len(sink.payloads) > 25, "the prompt's audio did not arrive"
    assert np.abs(pcm).max() > 1000, "only silence arrived"


async def test_a_first_pause_delays_the_answer(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    app.route("/rcml", Answer.xml("<Response><Pause length='2'/><Say>Hello.</Say><Hangup/></Response>"))
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound", node, NUMBER)
        await sipp_done(run, timeout=20)
        record = await only_call(node)
    ringing, answered = received(run, 180), received(run, 200)
    delay = datetime.fromisoformat(answered.wall) - datetime.fromisoformat(ringing.wall)
    assert 1.9 <= delay.total_seconds() <= 4.0
    assert record.status == "completed" and record.ring_duration is not None and record.ring_duration >= 2


@pytest.mark.parametrize(("reason", "status", "final"), [("busy", 486, "busy"), ("rejected", 603, "no-answer")])
async def test_reject_refuses_without_answering(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, reason: str, status: int, final: str
) -> None:
    app.route("/rcml", Answer.xml(f"<Response><Reject reason='{reason}'/><Say>Never.</Say></Response>"))
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound_refused", node, NUMBER)
        await sipp_done(run)
        record = await only_call(node)
        statuses = await app.wait_for("/status", count=2)
    assert finals(run) == [status]  # and never a 200: the scenario fails on one
    assert (record.status, record.duration, record.start_time) == (final, 0, None)
    assert [s.param("CallStatus") for s in statuses] == ["ringing", final]
    assert statuses[1].form[-1] == ("CallDuration", "0")


@pytest.mark.parametrize("rcml", ["<Response><Hangup/><Say>Never.</Say></Response>", "<Response/>"])
async def test_a_hangup_before_the_answer_is_487(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, rcml: str
) -> None:
    app.route("/rcml", Answer.xml(rcml))
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound_refused", node, NUMBER)
        await sipp_done(run)
        record = await only_call(node)
    assert finals(run) == [487]
    assert (record.status, record.duration, record.start_time) == ("canceled", 0, None)


async def test_the_callers_cancel_before_the_answer(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    app.route("/rcml", Answer.xml("<Response><Pause length='5'/><Say>Too late.</Say></Response>"))
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_cancel", node, NUMBER)
        await sipp_done(run)
        (fetch,) = app.requests("/rcml")
        record = await node.wait_status(fetch.param("CallSid") or "", "canceled")
        statuses = await app.wait_for("/status", count=2)
    assert finals(run) == [487]
    assert (record.duration, record.start_time) == (0, None)
    assert [s.param("CallStatus") for s in statuses] == ["ringing", "canceled"]


async def test_the_callers_bye_ends_the_rcml(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    long_prompt = "This prompt is far longer than the caller is willing to listen to. " * 3
    app.route("/rcml", Answer.xml(f"<Response><Say>{long_prompt}</Say><Redirect>/next</Redirect></Response>"))
    app.route("/next", Answer.xml("<Response><Hangup/></Response>"))
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_basic", node, NUMBER, extra=["-d", "1500"])
        await sipp_done(run)
        (fetch,) = app.requests("/rcml")
        record = await node.wait_status(fetch.param("CallSid") or "", "completed")
        statuses = await app.wait_for("/status", count=3)
        await asyncio.sleep(0.5)
    assert [m.method for m in run.messages(received=False) if m.is_request] == ["INVITE", "ACK", "BYE"]
    assert app.requests("/next") == []
    assert record.duration is not None and 1 <= record.duration <= 3
    assert [s.param("CallStatus") for s in statuses] == ["ringing", "in-progress", "completed"]


async def test_live_modification_redirects_a_ringing_call(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    app.route("/rcml", Answer.xml("<Response><Pause length='10'/><Say>Too late.</Say></Response>"))
    app.route("/busy", Answer.xml("<Response><Reject reason='busy'/></Response>"))
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound_refused", node, NUMBER)
        (fetch,) = await app.wait_for("/rcml")
        sid = fetch.param("CallSid") or ""
        r = await node.modify(sid, Url=app.url("/busy"))
        assert r.status_code == 200, r.text
        await sipp_done(run)
        record = await node.wait_status(sid, "busy")
    assert finals(run) == [486]
    (redirected,) = app.requests("/busy")
    assert redirected.param("CallStatus") == "ringing" and record.start_time is None


@pytest.mark.parametrize(("answer", "status", "code"), [(Answer(404), 404, 21402), (Answer(500), 500, 11200)])
async def test_a_failed_rcml_fetch_refuses_the_call(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, answer: Answer, status: int, code: int
) -> None:
    app.route("/rcml", answer)
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound_refused", node, NUMBER)
        await sipp_done(run)
        record = await only_call(node)
        await node.writer.flush()
        _, notes = await notifications.list_page(db, ACCOUNT, ListQuery(), call_sid=record.sid)
    assert finals(run) == [status]
    assert record.status == "failed"
    assert [n.error_code for n in notes] == [code]


async def test_an_unknown_number_is_404(db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp) -> None:
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound_refused", node, "+15559999999")
        await sipp_done(run)
        await no_call(node)
    assert finals(run) == [404]
    assert app.seen == []


async def test_a_store_failure_while_routing_is_a_500(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        async with db.write() as conn:  # the database breaks under the node
            await conn.execute(text("DROP TABLE incoming_phone_numbers"))
        run = caller(peers, "uac_inbound_refused", node, NUMBER)
        await sipp_done(run)
        await no_call(node)
    assert finals(run) == [500]
    assert received(run, 500).start_line == "SIP/2.0 500 Routing Failure"


# -- who may call ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("anonymous", "status"), [(False, 403), (True, 486)])
async def test_an_untrusted_anonymous_caller(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, anonymous: bool, status: int
) -> None:
    app.route("/rcml", Answer.xml("<Response><Reject reason='busy'/></Response>"))
    async with EngineNode(db, tmp_path, inbound=InboundPolicy(allow_anonymous=anonymous)) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound_refused", node, NUMBER)
        await sipp_done(run)
        await node.writer.flush()
    assert finals(run) == [status]
    assert len(app.requests("/rcml")) == (1 if anonymous else 0)


@pytest.mark.parametrize(("service", "app_path", "to"), [(NUMBER, "/rcml", NUMBER), ("bob", "/client", "bob")])
async def test_a_client_is_challenged_then_runs_its_application(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp, service: str, app_path: str, to: str
) -> None:
    hangup = Answer.xml("<Response><Say>Hello.</Say><Hangup/></Response>")
    app.route("/rcml", hangup)
    app.route("/client", hangup)
    async with EngineNode(db, tmp_path, inbound=UNTRUSTED) as node:
        await provision(db, app)
        await add_client(db, app, "alice", "s3cret-Pass", voice_url=app.url("/client"))
        run = caller(peers, "uac_inbound_auth", node, service, extra=["-au", "alice", "-ap", "s3cret-Pass"])
        await sipp_done(run, timeout=20)
        record = await only_call(node)
    assert finals(run) == [407, 200]
    challenge = received(run, 407).header("Proxy-Authenticate") or ""
    assert challenge.startswith(f'Digest realm="{REALM}"') and "algorithm=MD5" in challenge
    (fetch,) = app.requests()[:1]
    assert fetch.path == app_path
    assert (fetch.param("From"), fetch.param("To"), fetch.param("CallerName")) == ("alice", to, "null")
    assert (record.status, record.direction, record.from_, record.to) == ("completed", "inbound", "alice", to)
    assert record.phone_number_sid == (PN_SID if app_path == "/rcml" else None)


async def test_a_client_with_a_wrong_password_is_forbidden(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    async with EngineNode(db, tmp_path, inbound=UNTRUSTED) as node:
        await provision(db, app)
        await add_client(db, app, "alice", "s3cret-Pass", voice_url=app.url("/client"))
        run = caller(peers, "uac_inbound_auth", node, NUMBER, extra=["-au", "alice", "-ap", "wrong"])
        await asyncio.to_thread(run.wait, 15)
        await no_call(node)
    assert finals(run)[:2] == [407, 403] and set(finals(run)) == {407, 403}
    assert app.seen == []


async def test_a_baresip_client_calls_a_number_and_is_recorded(
    db: Database, tmp_path: Path, peers: PeerGroup, app: WebApp
) -> None:
    need("baresip")
    app.route("/rcml", Answer.xml("<Response><Record action='/recorded' maxLength='2' playBeep='false'/></Response>"))
    app.route("/recorded", Answer.xml("<Response><Hangup/></Response>"))
    async with EngineNode(db, tmp_path, inbound=UNTRUSTED) as node:
        await provision(db, app)
        await add_client(db, app, "alice", "s3cret-Pass", voice_url=None)
        account = f"<sip:alice@{LOOPBACK}:{node.sip_port}>;auth_pass=s3cret-Pass;regint=0;audio_codecs=PCMU"
        dial = f"/dial sip:{NUMBER}@{LOOPBACK}:{node.sip_port}"
        # Started off the loop: the node must answer baresip's INVITE while the harness waits for it.
        phone = await asyncio.to_thread(peers.baresip, account, audio_seconds=8.0, commands=[dial])
        (action,) = await app.wait_for("/recorded", timeout=15)
        record = await node.wait_status(action.param("CallSid") or "", "completed")
        audio = await node.fetch(action.param("RecordingUrl") or "")
    got = [m.status for m in phone.messages() if m.direction == "received" and m.cseq[1] == "INVITE"]
    assert [status for status in got if status != 100] == [407, 180, 200], got
    assert (record.direction, record.from_, record.to, record.phone_number_sid) == ("inbound", "alice", NUMBER, PN_SID)
    with wave.open(io.BytesIO(audio.content)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(pcm[np.abs(pcm) > 500]) > 4000, "the recording is silent"
    assert abs(dominant_hz(pcm[-8000:]) - 440.0) < 10.0
