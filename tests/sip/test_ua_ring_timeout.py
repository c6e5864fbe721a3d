"""The UAC's ring timeout (issue 7, SIP item 9): an unanswered INVITE is cancelled at an exact deadline and reported
as no-answer."""

from __future__ import annotations

from callplane.sip.events import CallAnswered, CallFailed, CallProgress, IncomingCall
from callplane.sip.ua import RING_TIMEOUT
from tests.sip.uapair import ALICE, Link, answer_for, lines, offer


def no_answer(handle: str) -> CallFailed:
    return CallFailed(handle, 487, RING_TIMEOUT, no_answer=True)


def calling(link: Link, ring_timeout: float) -> tuple[str, IncomingCall]:
    """a calls b with ``ring_timeout``; b has the call."""
    handle = link.a.invite(link.bob, ALICE, offer(), 0.0, ring_timeout=ring_timeout)
    link.pump()
    (incoming,) = link.events(link.b)
    assert isinstance(incoming, IncomingCall)
    return handle, incoming


def test_ringing_call_is_cancelled_at_the_deadline() -> None:
    link = Link()
    handle, _ = calling(link, 30.0)
    link.b.ring(handle, 0.0)
    link.pump()
    assert [type(e) for e in link.events(link.a)] == [CallProgress]
    link.log.clear()
    assert link.a.get_timer() == 30.0  # Timer B stopped with the 180: the ring timeout is the next deadline
    link.advance(29.999)
    assert link.events(link.a) == [] and link.a.datagrams_to_send() == []
    link.advance(30.0)
    assert link.events(link.a) == [no_answer(handle)]
    link.pump()
    assert lines(link.log) == [
        "a: CANCEL sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 200 OK",
        "b: SIP/2.0 487 Request Terminated",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert link.events(link.a) == []  # the 487 adds nothing: the engine already has the call's last event
    assert [type(e).__name__ for e in link.events(link.b)] == ["CallCancelled"]
    assert link.a._calls == {}


def test_deadline_before_any_provisional_holds_the_cancel_until_one_arrives() -> None:
    link = Link()
    handle = link.a.invite(link.bob, ALICE, offer(), 0.0, ring_timeout=0.2)
    link.pass_("a", lambda _: False)  # the INVITE is lost
    link.advance(0.2)
    assert link.events(link.a) == [no_answer(handle)]
    assert link.a.datagrams_to_send() == []  # no CANCEL before a provisional (§9.1)
    link.log.clear()
    link.advance(0.5)  # Timer A: the INVITE again, which now arrives; its 100 Trying releases the CANCEL
    link.pump()
    assert lines(link.log) == [
        "a: INVITE sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 100 Trying",
        "a: CANCEL sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 200 OK",
        "b: SIP/2.0 487 Request Terminated",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert [type(e).__name__ for e in link.events(link.b)] == ["IncomingCall", "CallCancelled"]
    assert link.events(link.a) == []


def test_answer_before_the_deadline_stops_the_timer() -> None:
    link = Link()
    handle, incoming = calling(link, 5.0)
    link.b.answer(handle, answer_for(incoming), link.now)
    link.pump()
    assert [type(e) for e in link.events(link.a)] == [CallAnswered]
    link.log.clear()
    link.advance(5.0)
    link.pump()
    assert link.events(link.a) == [] and lines(link.log) == []
    assert link.a.call(handle).state == "confirmed"
    assert link.a.get_timer() == 32.0  # only Timer M of the finished INVITE transaction (RFC 6026)


def test_engine_cancel_before_the_deadline_wins() -> None:
    link = Link()
    handle, _ = calling(link, 5.0)
    link.b.ring(handle, link.now)
    link.pump()
    link.events(link.a)
    link.a.cancel(handle, link.now)
    link.pump()
    assert link.events(link.a) == [CallFailed(handle, 487, "Request Terminated")]
    link.advance(10.0)
    assert link.events(link.a) == []
