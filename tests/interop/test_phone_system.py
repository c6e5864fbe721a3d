"""callplane as a phone system, the way a user sets it up (issue 9, "Checked by", first bullet).

Through the REST API of a real ``callplane serve``: two Clients and a number whose RCML Dials one Client. Two
baresips register as those Clients with digest; alice calls the number, is challenged (407) and authenticates; the
node runs the number's RCML and Dials bob, whose phone rings and answers. Each phone plays its own tone and records
what it hears (``sndfile``), so an FFT of each recording shows the other's tone crossed the bridge; RFC 4733 digits
sent by each phone are reported by the other. The call records show the inbound parent and its ``outbound-dial``
child.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.interop.conftest import need
from tests.interop.peers import LOOPBACK, PeerGroup
from tests.interop.test_media_calls import Recorder, baresip, dominant_hz
from tests.interop.test_serve_calls import ACCOUNT, TOKEN, Node, start_node
from tests.webapp import Answer, WebApp

pytestmark = pytest.mark.interop

NUMBER = "+15551230000"
ALICE_HZ, BOB_HZ = 440.0, 1800.0
PASSWORDS = {"alice": "Wonderland-42!", "bob": "Yes-We-Can-77!"}


def _phone(peers: PeerGroup, tmp: Path, node: Node, login: str, hz: float, seconds: float, answer: bool) -> Recorder:
    account = f"<sip:{login}@{LOOPBACK}:{node.sip}>;auth_pass={PASSWORDS[login]};regint=600;audio_codecs=PCMU"
    if answer:
        account += ";answermode=auto"
    phone = baresip(peers, tmp, account=account, hz=hz, seconds=seconds, name=login, control=True)
    phone.peer.wait_output(r"\} 200 OK .*binding", 10.0)  # before the web app is needed: blocking is fine here
    return phone


async def _events(phone: Recorder, digits: str, timeout: float = 5.0) -> None:
    """Wait until ``phone`` logged the end of each of ``digits`` as received RFC 4733 events."""
    for digit in digits:
        await asyncio.to_thread(phone.peer.wait_output, rf"received event: '{re.escape(digit)}' \(end=1\)", timeout)


async def test_a_client_calls_a_number_that_dials_another_client(tmp_path: Path, peers: PeerGroup) -> None:
    need("baresip")
    group = PeerGroup(tmp_path / "node")
    try:
        node = start_node(group, tmp_path / "data")
        async with WebApp() as app, httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as api:
            app.route(
                "/rcml",
                Answer.xml(
                    f"<Response><Dial action='{app.url('/action')}' timeout='10'><Client>bob</Client></Dial></Response>"
                ),
            )
            app.route("/action", Answer.xml("<Response><Hangup/></Response>"))
            for login, password in PASSWORDS.items():
                r = await api.post(node.url("/Clients.json"), data={"Login": login, "Password": password})
                assert r.status_code in (200, 201), r.text
                assert "password" not in r.json()
            r = await api.post(
                node.url("/IncomingPhoneNumbers.json"),
                data={"PhoneNumber": NUMBER, "VoiceUrl": app.url("/rcml"), "VoiceMethod": "POST"},
            )
            assert r.status_code in (200, 201), r.text
            number_sid = r.json()["sid"]

            bob = _phone(peers, tmp_path, node, "bob", BOB_HZ, 12.0, answer=True)
            alice = _phone(peers, tmp_path, node, "alice", ALICE_HZ, 6.0, answer=False)
            assert alice.control is not None and bob.control is not None
            # The web app runs on this loop: every blocking wait on a phone goes to a thread.
            await asyncio.to_thread(alice.control.command, "dial", f"sip:{NUMBER}@{LOOPBACK}:{node.sip}")
            await asyncio.to_thread(bob.control.wait_event, "CALL_ESTABLISHED", 15.0)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(alice.control.command, "sndcode", "12")
            await _events(bob, "12")
            await asyncio.to_thread(bob.control.command, "sndcode", "3#")
            await _events(alice, "3#")
            # alice's tone ends after 6 s and baresip hangs up; bob's side ends with the bridge.
            await asyncio.to_thread(alice.peer.wait_output, r"terminated \(duration", 15.0)
            await asyncio.to_thread(bob.peer.wait_output, r"terminated \(duration", 10.0)

            (action,) = await app.wait_for("/action", count=1)
            assert action.param("DialCallStatus") == "completed"
            child_sid = action.param("DialCallSid")
            parent_sid = action.param("CallSid")
            assert child_sid and parent_sid and child_sid != parent_sid
            assert action.param("Direction") == "inbound"
            assert action.param("From") == "alice" and action.param("To") == NUMBER

            r = await api.get(node.url(f"/Calls/{parent_sid}.json"))
            parent = r.json()
            assert (parent["direction"], parent["phone_number_sid"]) == ("inbound", number_sid)
            r = await api.get(node.url("/Calls.json"), params={"ParentCallSid": parent_sid})
            (child,) = r.json()["calls"]
            assert child["sid"] == child_sid and child["parent_call_sid"] == parent_sid
            assert child["to"] == "bob"
    finally:
        group.close()

    # Each phone heard the other's tone through the bridge: the span from the first to the last loud sample (the
    # bridged part of the call) has the other phone's frequency, and lasts more than a second.
    for phone, other_hz in ((alice, BOB_HZ), (bob, ALICE_HZ)):
        rate, heard = phone.dumps()["dec"]
        loud = np.flatnonzero(np.abs(heard) > 500)
        assert len(loud), f"{phone.peer} heard nothing"
        span = heard[loud[0] : loud[-1] + 1]
        assert len(span) > rate and abs(dominant_hz(span, rate) - other_hz) <= 15.0
