"""What the UAC does with SDP it cannot use (issue 7, SIP item 1): the call ends cleanly and nothing raises."""

from __future__ import annotations

import pytest

from callplane.core.ids import IdSource
from callplane.sip.events import CallAnswered, CallEnded, CallFailed, CallProgress, MediaUpdated
from callplane.sip.message import Request, Response
from callplane.sip.sdp import SessionDescription, answer_offer
from callplane.sip.ua import CallStateError, UserAgent
from callplane.sip.uac import UNUSABLE_ANSWER, UNUSABLE_OFFER
from tests.sip.uapair import ALICE, BOB, B, Link, answer_for, connected, first_line, ok_for, parse, start_call

ANSWER = bytes(
    answer_offer(
        SessionDescription.parse(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n"
        ),
        "127.0.0.1",
        30000,
        session_id="222",
    )
)
NO_C = ANSWER.replace(b"c=IN IP4 127.0.0.1\r\n", b"")
BAD_BODIES = {
    "no c= line": NO_C,
    "not SDP": b"v=1\r\nhello\r\n",
    "no common codec": ANSWER.replace(b"RTP/AVP 0", b"RTP/AVP 18").replace(b"PCMU/8000", b"G729/8000"),
    "stream refused": ANSWER.replace(b"m=audio 30000", b"m=audio 0"),
    "no body": b"",
}


def invite_out(link: Link) -> tuple[str, Request]:
    handle = link.a.invite(BOB, ALICE, SessionDescription.parse(ANSWER.replace(b"30000", b"20000")), 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, Request)
    return handle, invite


def with_body(response: Response, body: bytes) -> Response:
    response.headers.remove("content-type")
    response.body = body
    if body:
        response.headers.add("Content-Type", "application/sdp")
    return response


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_2xx_with_unusable_answer_is_acked_then_byed_and_reported(body: bytes) -> None:
    link = Link()
    handle, invite = invite_out(link)
    link.a.receive(with_body(ok_for(invite, "t1"), body), B, 0.1)
    assert [first_line(d) for d, _ in link.a.datagrams_to_send()] == [
        "ACK sip:bob@127.0.0.1:5062 SIP/2.0",
        "BYE sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert link.events(link.a) == [CallFailed(handle, 488, UNUSABLE_ANSWER)]
    assert link.a.faults == 0
    assert link.a.call(handle).state == "ending"  # until the BYE is answered (or times out)
    link.advance(40.0)  # the BYE times out: the call is forgotten without a second event
    assert link.events(link.a) == []
    assert link.a._calls == {}


def test_early_media_without_address_is_progress_without_media() -> None:
    link = Link()
    handle, invite = invite_out(link)
    ringing = with_body(invite.create_response(183, to_tag="t1"), NO_C)
    ringing.headers.add("Contact", "<sip:bob@127.0.0.1:5062>")
    link.a.receive(ringing, B, 0.1)
    assert link.events(link.a) == [CallProgress(handle, 183, "Session Progress", None)]
    link.a.receive(ok_for(invite, "t1"), B, 0.2)
    (answered,) = link.events(link.a)
    assert isinstance(answered, CallAnswered) and answered.media is not None and answered.media.port == 30000
    assert link.a.faults == 0


def test_2xx_without_body_keeps_the_early_media_of_a_183() -> None:
    link = Link()
    handle, invite = invite_out(link)
    link.a.receive(with_body(invite.create_response(183, to_tag="t1"), ANSWER), B, 0.1)
    link.a.receive(with_body(ok_for(invite, "t1"), b""), B, 0.2)
    progress, answered = link.events(link.a)
    assert isinstance(progress, CallProgress) and progress.media is not None
    assert isinstance(answered, CallAnswered) and answered.media == progress.media
    assert [first_line(d) for d, _ in link.a.datagrams_to_send()] == ["ACK sip:bob@127.0.0.1:5062 SIP/2.0"]


def test_reinvite_2xx_with_unusable_answer_ends_the_call() -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    ((data, _),) = link.a.datagrams_to_send()
    reinvite = parse(data)
    assert isinstance(reinvite, Request)
    ok = with_body(reinvite.create_response(200), NO_C)
    ok.headers.add("Contact", "<sip:bob@127.0.0.1:5062>")
    link.a.receive(ok, B, link.now)
    assert [first_line(d) for d, _ in link.a.datagrams_to_send()] == [
        "ACK sip:bob@127.0.0.1:5062 SIP/2.0",
        "BYE sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert link.events(link.a) == [CallEnded(handle, "local", 488, UNUSABLE_ANSWER)]
    assert link.a.faults == 0


def test_peer_reinvite_offer_without_address_is_488() -> None:
    link = Link()
    handle, _ = connected(link)
    dialog = link.a.call(handle).dialog
    assert dialog is not None
    reinvite = dialog.create_request(
        "INVITE", contact=link.a.contact("alice"), body=NO_C, content_type="application/sdp"
    )
    link.a.tl.send_request(reinvite, B, link.now)
    link.pass_("a")
    statuses = [r.status for r in map(parse, (d for d, _ in link.b.datagrams_to_send())) if isinstance(r, Response)]
    assert statuses == [488]  # answered at once: no 100 Trying (§17.2.1)
    assert [e for e in link.events(link.b) if isinstance(e, MediaUpdated)] == []
    assert link.b.faults == 0 and link.b.call(handle).state == "confirmed"


# ------------------------------------------------------------------------ late offer: the answer goes in the ACK


def late_invite(link: Link) -> tuple[str, Request]:
    handle = link.a.invite(BOB, ALICE, None, 0.0)
    ((data, _),) = link.a.datagrams_to_send()
    invite = parse(data)
    assert isinstance(invite, Request) and invite.body == b""
    return handle, invite


def offering_200(invite: Request, body: bytes) -> Response:
    ok = with_body(invite.create_response(200, to_tag="t1"), body)
    ok.headers.add("Contact", "<sip:bob@127.0.0.1:5062>")
    return ok


def sent(link: Link) -> list[Request]:
    out = [parse(d) for d, _ in link.a.datagrams_to_send()]
    assert all(isinstance(m, Request) for m in out)
    return out  # type: ignore[return-value]


def test_late_offer_hangup_before_answering_acks_with_a_refusal_then_byes() -> None:
    link = Link()
    handle, invite = late_invite(link)
    link.a.receive(offering_200(invite, ANSWER), B, 0.1)
    (answered,) = link.events(link.a)
    assert isinstance(answered, CallAnswered) and answered.needs_answer
    with pytest.raises(CallStateError):  # no new offer before the ACK that answers the last one
        link.a.hold(handle, 0.2)
    link.a.hangup(handle, 0.2)
    ack, bye = sent(link)
    assert (ack.method, bye.method) == ("ACK", "BYE")
    refusal = SessionDescription.parse(ack.body)
    assert [(m.media, m.port) for m in refusal.media] == [("audio", 0)]  # RFC 3264 §6: stream refused
    assert ack.content_type == "application/sdp"


@pytest.mark.parametrize("body", [NO_C, b""], ids=["no c= line", "no body"])
def test_late_offer_with_unusable_offer_is_refused_in_the_ack_then_byed(body: bytes) -> None:
    link = Link()
    handle, invite = late_invite(link)
    link.a.receive(offering_200(invite, body), B, 0.1)
    assert link.events(link.a) == [CallFailed(handle, 488, UNUSABLE_OFFER)]
    ack, bye = sent(link)
    assert (ack.method, bye.method) == ("ACK", "BYE")
    if body:
        assert [m.port for m in SessionDescription.parse(ack.body).media] == [0]
    else:
        assert ack.body == b""  # no offer to answer
    assert link.a.faults == 0


def test_late_offer_second_fork_is_acked_with_a_refusal_and_byed() -> None:
    link = Link()
    handle, invite = late_invite(link)
    link.a.receive(offering_200(invite, ANSWER), B, 0.1)
    other = offering_200(invite, ANSWER)
    other.headers.set("To", str(other.to.with_tag("t2")))
    link.a.receive(other, B, 0.2)
    ack, bye = sent(link)
    assert (ack.method, bye.method, ack.to.tag, bye.to.tag) == ("ACK", "BYE", "t2", "t2")
    assert [m.port for m in SessionDescription.parse(ack.body).media] == [0]
    assert [type(e) for e in link.events(link.a)] == [CallAnswered]
    assert link.a.call(handle).answer_due


# ----------------------------------------------------------------------------------- the UA's error boundary


class AckBug(UserAgent):
    """A UA with a bug planted where a peer's ACK is handled (how else to test the boundary that contains bugs)."""

    def _on_ack(self, request: Request, now: float) -> None:
        raise RuntimeError("planted bug")


def test_an_internal_error_ends_only_its_call_and_tells_both_sides() -> None:
    link = Link()
    link.b = AckBug(IdSource(2), {"UDP": (B.host, B.port)})
    handle, incoming = start_call(link)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.pump()  # the ACK hits the bug: b sends BYE, reports the call ended, and nothing raises
    assert link.b.faults == 1
    assert link.events(link.b) == [CallEnded(handle, "local", 500, "Internal Error")]
    assert link.b._calls == {}
    assert [type(e) for e in link.events(link.a)] == [CallAnswered, CallEnded]
    assert link.a._calls == {}
    other, _ = start_call(link)  # the next call on the same UA works
    assert link.b.call(other).state == "received"
