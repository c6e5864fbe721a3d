"""An inbound caller whose number's RCML Dials (issue 9, "Bridge"): it hears ringing (180) until the callee
answers, and a callee's early media reaches it before anyone answers (a 183 with our answer, which the 200 repeats).

SIPp plays the trunk's caller (``uac_inbound``, its audio port is the test's RTP sink) and the callee; the web app
serves the RCML. Judged: the responses the caller received, the audio that reached its port and when, the records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callplane.sip.sdp import SessionDescription
from callplane.store import calls as store_calls
from callplane.store.calls import CallQuery
from callplane.store.db import Database
from tests.engine.enginenode import ACCOUNT, EngineNode
from tests.interop import test_inbound_calls as inbound
from tests.interop.conftest import sipp_callee, sipp_done
from tests.interop.peers import LOOPBACK, PeerGroup, SippRun
from tests.interop.test_inbound_calls import NUMBER, TRUNK, RtpSink, caller, provision
from tests.webapp import Answer, WebApp

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db", ["sqlite"], indirect=True)]
app, rtp = inbound.app, inbound.rtp  # the inbound tests' fixtures: the web app, the caller's RTP sink


def responses(run: SippRun) -> list[int]:
    return [m.status for m in run.messages(received=True) if m.status is not None and m.cseq[1] == "INVITE"]


def sdp_port(run: SippRun, status: int) -> int:
    message = next(m for m in run.messages(received=True) if m.status == status and m.cseq[1] == "INVITE")
    return SessionDescription.parse(message.body).media[0].port


async def test_the_caller_rings_until_the_callee_answers(
    db: Database,
    tmp_path: Path,
    peers: PeerGroup,
    app: WebApp,
    rtp: tuple[int, RtpSink],
) -> None:
    callee = sipp_callee(peers, "uas_answer")
    app.route(
        "/rcml",
        Answer.xml(f"<Response><Dial timeLimit='2'><Sip>sip:bob@{LOOPBACK}:{callee.port}</Sip></Dial></Response>"),
    )
    port, _ = rtp
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound", node, NUMBER, keys={"rtp_port": str(port)})
        await sipp_done(run, timeout=20)
        await sipp_done(callee, timeout=10)
        (fetch,) = await app.wait_for("/rcml")
        parent = await node.wait_status(fetch.param("CallSid") or "", "completed")
        await node.writer.flush()
        page = await store_calls.list_page(node.db, CallQuery(ACCOUNT))
        (child,) = [r for r in page.records if r.parent_call_sid == parent.sid]
    assert 180 in responses(run) and responses(run)[-1] == 200
    # The caller was answered only once the callee had answered (the callee rang for 500 ms).
    assert parent.start_time is not None and child.start_time is not None
    assert parent.start_time >= child.start_time
    assert child.ring_duration is not None and parent.duration is not None and parent.duration <= 3


async def test_early_media_from_the_callee_reaches_a_ringing_caller(
    db: Database,
    tmp_path: Path,
    peers: PeerGroup,
    app: WebApp,
    rtp: tuple[int, RtpSink],
) -> None:
    callee = sipp_callee(peers, "uas_early_media")  # 183 + PCMA announcement, then 486 after 3 s
    app.route(
        "/rcml",
        Answer.xml(f"<Response><Dial action='/busy'><Sip>sip:bob@{LOOPBACK}:{callee.port}</Sip></Dial></Response>"),
    )
    app.route("/busy", Answer.xml("<Response><Say>The line is busy.</Say><Hangup/></Response>"))
    port, sink = rtp
    async with EngineNode(db, tmp_path, inbound=TRUNK) as node:
        await provision(db, app)
        run = caller(peers, "uac_inbound", node, NUMBER, keys={"rtp_port": str(port)})
        await sipp_done(run, timeout=25)
        (action,) = await app.wait_for("/busy")
        parent = await node.wait_status(action.param("CallSid") or "", "completed")
    assert action.param("DialCallStatus") == "busy"
    got = responses(run)
    assert 183 in got and got.index(183) < got.index(200)
    assert sdp_port(run, 183) == sdp_port(run, 200)  # the 200 repeats the early answer: one leg throughout
    # The announcement (transcoded from the callee's PCMA) reached the caller while it was still unanswered.
    assert parent.start_time is not None
    answered = parent.start_time.timestamp()
    early = [p for p, t in zip(sink.payloads, sink.arrivals, strict=True) if t < answered]
    assert len(early) > 50, f"only {len(early)} packets of early media"
    pcm = np.frombuffer(b"".join(early), dtype=np.uint8)
    assert len(set(pcm.tolist())) > 20, "the early media was silence"
