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
