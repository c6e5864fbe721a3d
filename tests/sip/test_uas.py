"""The UAS side of the UA in virtual time (issue 7, SIP items 3, 7 and 9): what the engine asks of the UA and what the
caller sees on the wire. The endpoints and helpers are those of ``test_ua``."""

from __future__ import annotations

import pytest

from callplane.sip.events import CallAnswered, CallFailed, CallProgress
from callplane.sip.message import Response
from tests.sip.test_ua import Link, answer_for, parse, start_call


def _responses(link: Link, status: int) -> list[Response]:
    out = [parse(data) for src, data in link.log if src == "b"]
    return [m for m in out if isinstance(m, Response) and m.status == status]


# ------------------------------------------------------------------------------------ extra response headers


def test_ring_and_answer_carry_the_engines_headers() -> None:
    link = Link()
    handle, incoming = start_call(link)
    pai = ("P-Asserted-Identity", '"Bob" <sip:+15550001@example.com>')
    link.b.ring(incoming.call, link.now, headers=(pai, ("X-RestComm-CallSid", "CA1")))
    link.pump()
    (ringing,) = _responses(link, 180)
    assert ringing.headers.get("P-Asserted-Identity") == pai[1]
    assert ringing.headers.get("X-RestComm-CallSid") == "CA1"
    assert ringing.headers.get("Contact") is not None  # ours, still there
    link.b.answer(incoming.call, answer_for(incoming), link.now, headers=(("X-Answered-By", "app"),))
    link.pump()
    (ok,) = _responses(link, 200)
    assert ok.headers.get("X-Answered-By") == "app"
    assert ok.headers.get("Content-Type") == "application/sdp"
    progress, answered = link.events(link.a)
    assert isinstance(progress, CallProgress) and progress.call == handle
    assert isinstance(answered, CallAnswered) and answered.headers == (("X-Answered-By", "app"),)


def test_reject_carries_reason_and_redirect_contact() -> None:
    link = Link()
    handle, incoming = start_call(link)
    reason = ("Reason", 'Q.850;cause=17;text="User busy"')
    link.b.reject(incoming.call, 486, link.now, headers=(reason, ("X-Why", "busy")))
    link.pump()
    (busy,) = _responses(link, 486)
    assert busy.headers.get("Reason") == reason[1] and busy.headers.get("X-Why") == "busy"
    assert link.events(link.a) == [CallFailed(handle, 486, "Busy Here", (reason,))]

    handle, incoming = start_call(link)
    target = "<sip:carol@127.0.0.1:5070>"
    link.b.reject(incoming.call, 302, link.now, headers=(("Contact", target),))
    link.pump()
    (moved,) = _responses(link, 302)
    assert moved.headers.get_all("contact") == [target]
    assert link.events(link.a) == [CallFailed(handle, 302, "Moved Temporarily", (("Contact", target),))]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("X-Evil", "a\r\nBYE sip:x SIP/2.0", "one line"),
        ("X-Evil", "a\nb", "one line"),
        ("Bad Name", "x", "not a header name"),
        ("", "x", "not a header name"),
        ("Call-ID", "mine", "written by the UA"),
        ("i", "mine", "written by the UA"),  # compact form of Call-ID
        ("Contact", "<sip:x@y>", "written by the UA"),
        ("Content-Length", "0", "written by the UA"),
    ],
)
def test_bad_extra_headers_are_refused_before_anything_changes(name: str, value: str, message: str) -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.log.clear()
    with pytest.raises(ValueError, match=message):
        link.b.ring(incoming.call, link.now, headers=((name, value),))
    with pytest.raises(ValueError, match=message):
        link.b.answer(incoming.call, answer_for(incoming), link.now, headers=((name, value),))
    if name != "Contact":
        with pytest.raises(ValueError, match=message):
            link.b.reject(incoming.call, 486, link.now, headers=((name, value),))
    link.pump()
    assert link.log == [] and link.b.call(handle).state == "received"
    link.b.answer(incoming.call, answer_for(incoming), link.now)  # the call is intact
    link.pump()
    assert link.b.call(handle).state == "confirmed"
