"""Our in-dialog requests (issue 7, SIP item 7, UAC side): 481/408/no answer end the dialog (RFC 3261 §12.2.1.2), and
the ACK of a challenged re-INVITE carries its credentials."""

from __future__ import annotations

import pytest

from callplane.core.ids import IdSource
from callplane.sip.digest import Credentials, DigestResponse, DigestServer, Verdict
from callplane.sip.events import CallEnded, MediaUpdated, ReinviteFailed
from callplane.sip.message import Request
from callplane.sip.sdp import SessionDescription, answer_offer
from tests.sip.uapair import B, Link, connected, first_line, parse

DTMF = b"Signal=5\r\nDuration=160\r\n"


def sent(link: Link) -> list[Request]:
    out = [parse(d) for d, _ in link.a.datagrams_to_send()]
    return [m for m in out if isinstance(m, Request)]


def info_out(link: Link) -> tuple[str, Request]:
    handle, _ = connected(link)
    link.a.info(handle, DTMF, "application/dtmf-relay", link.now)
    (info,) = sent(link)
    assert info.method == "INFO" and info.body == DTMF
    return handle, info


def test_info_answered_200_keeps_the_call() -> None:
    link = Link()
    handle, info = info_out(link)
    link.b.receive(info, link.pa, link.now)
    link.pass_("b")
    assert [type(e).__name__ for e in link.events(link.b)] == ["DtmfReceived"]
    assert link.events(link.a) == [] and link.a.call(handle).state == "confirmed"


def test_info_answered_481_ends_the_call_without_bye() -> None:
    link = Link()
    handle, info = info_out(link)
    link.a.receive(info.create_response(481), B, link.now)
    assert link.events(link.a) == [CallEnded(handle, "remote", 481, "Call/Transaction Does Not Exist")]
    assert sent(link) == []  # the dialog is gone at the peer: nothing to BYE
    assert link.a._calls == {}


def test_info_answered_408_ends_the_call_with_a_bye() -> None:
    link = Link()
    handle, info = info_out(link)
    link.a.receive(info.create_response(408), B, link.now)
    assert link.events(link.a) == [CallEnded(handle, "timeout", 408, "Request Timeout")]
    assert [first_line(bytes(m)) for m in sent(link)] == ["BYE sip:bob@127.0.0.1:5062 SIP/2.0"]


def test_unanswered_info_ends_the_call_at_timer_f() -> None:
    link = Link()
    handle, _ = info_out(link)
    link.advance(31.999)
    assert link.events(link.a) == []
    link.advance(32.0)  # Timer F = 64*T1 (§17.1.2.2)
    assert link.events(link.a) == [CallEnded(handle, "timeout", 408, "Request Timeout")]
    assert [m.method for m in sent(link)][-1] == "BYE"


@pytest.mark.parametrize("status", [481, 408])
def test_reinvite_answered_481_or_408_ends_the_call(status: int) -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    (reinvite,) = sent(link)
    response = reinvite.create_response(status)
    link.a.receive(response, B, link.now)
    by = "remote" if status == 481 else "timeout"
    assert link.events(link.a) == [
        ReinviteFailed(handle, status, response.reason),
        CallEnded(handle, by, status, response.reason),
    ]
    assert [m.method for m in sent(link)] == (["ACK"] if status == 481 else ["ACK", "BYE"])


def test_bye_answered_481_still_ends_the_call() -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.bye(handle, link.now)
    (bye,) = sent(link)
    link.a.receive(bye.create_response(481), B, link.now)
    assert link.events(link.a) == [CallEnded(handle, "local", 481, "Call/Transaction Does Not Exist")]


def test_challenged_reinvite_ack_carries_the_credentials() -> None:
    link = Link()
    link.a.credentials = Credentials("alice", "secret")
    handle, _ = connected(link)
    server = DigestServer("example", b"k" * 32, IdSource(9), algorithms=("MD5",), qop=False)
    link.a.hold(handle, link.now)
    (reinvite,) = sent(link)
    challenge = reinvite.create_response(407)
    challenge.headers.add("Proxy-Authenticate", server.challenges(0.0)[0])
    link.a.receive(challenge, B, link.now)
    ack_407, retry = sent(link)
    assert (ack_407.method, retry.method) == ("ACK", "INVITE")
    credentials = retry.headers.get("proxy-authorization")
    assert credentials is not None
    verdict = server.verify(DigestResponse.parse(credentials), "INVITE", 1.0, password="secret")
    assert verdict is Verdict.OK
    ok = retry.create_response(200)
    ok.headers.add("Contact", "<sip:bob@127.0.0.1:5062>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = bytes(answer_offer(SessionDescription.parse(retry.body), "127.0.0.1", 30000, session_id="2"))
    link.a.receive(ok, B, link.now)
    (ack,) = sent(link)
    assert ack.method == "ACK" and str(ack.cseq) == f"{retry.cseq.seq} ACK"
    assert ack.headers.get("proxy-authorization") == credentials  # §22.1: the ACK repeats the INVITE's credentials
    assert [type(e) for e in link.events(link.a)] == [MediaUpdated]
