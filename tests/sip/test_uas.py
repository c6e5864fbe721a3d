"""The UAS side of the UA in virtual time (issue 7, SIP items 3, 7 and 9): what the engine asks of the UA and what the
caller sees on the wire. The endpoints and helpers are those of ``test_ua``."""

from __future__ import annotations

import gc
from collections import Counter

import pytest

from callplane.sip import uas
from callplane.sip.events import (
    CallAnswered,
    CallCancelled,
    CallEnded,
    CallFailed,
    CallProgress,
    MediaUpdated,
    ReinviteCancelled,
    ReinviteFailed,
    ReinviteReceived,
)
from callplane.sip.message import Response
from callplane.sip.sdp import Direction, SessionDescription, answer_offer
from callplane.sip.ua import CallStateError
from tests.sip.uapair import A, B, Link, answer_for, connected, lines, offer, parse, start_call


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
    # X- headers too: <Dial><Sip> reports them as DialSipHeader_X-… (restcomm-behaviour §4.2).
    assert link.events(link.a) == [CallFailed(handle, 486, "Busy Here", (reason, ("X-Why", "busy")))]

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


# ------------------------------------------------------------------------------------- re-INVITE relay (opt-in)


def _relay_answer(event: ReinviteReceived, direction: Direction = "recvonly") -> SessionDescription:
    assert event.sdp is not None
    return answer_offer(SessionDescription.parse(event.sdp), "127.0.0.1", 30002, session_id="222", direction=direction)


def _held_by_caller_with_relay() -> tuple[Link, str]:
    """A connected call whose callee relays re-INVITEs; the caller's hold re-INVITE waits for the engine."""
    link = Link(relay_reinvites=True)
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    link.pump()
    assert [type(e) for e in link.events(link.b)] == [ReinviteReceived]
    return link, handle


def test_relayed_reinvite_waits_for_the_engine_then_its_answer_goes_out() -> None:
    link = Link(relay_reinvites=True)
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    link.pump()
    assert lines(link.log) == ["a: INVITE sip:bob@127.0.0.1:5062 SIP/2.0", "b: SIP/2.0 100 Trying"]
    (relayed,) = link.events(link.b)
    assert isinstance(relayed, ReinviteReceived) and relayed.call == handle
    assert relayed.media is not None and relayed.media.direction == "sendonly"
    assert link.events(link.a) == []
    link.advance(20.0)  # the engine takes its time: nothing else is sent, the call stays up
    assert link.b.datagrams_to_send() == [] and link.b.call(handle).state == "confirmed"
    link.log.clear()
    link.b.answer_reinvite(handle, _relay_answer(relayed), link.now, headers=(("X-Relayed", "1"),))
    link.pump()
    assert lines(link.log) == ["b: SIP/2.0 200 OK", "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0"]
    ok = parse(link.log[0][1])
    assert isinstance(ok, Response) and ok.headers.get("X-Relayed") == "1"
    assert SessionDescription.parse(ok.body).origin.version == 2  # above our first answer's version
    (seen,) = link.events(link.a)
    assert isinstance(seen, MediaUpdated) and seen.media.direction == "recvonly" and seen.media.port == 30002
    (updated,) = link.events(link.b)
    assert isinstance(updated, MediaUpdated) and updated.media.held
    with pytest.raises(CallStateError):
        link.b.answer_reinvite(handle, _relay_answer(relayed), link.now)  # answered already


def test_relay_is_per_call_and_off_by_default() -> None:
    link = Link()
    handle, _ = connected(link)
    link.a.hold(handle, link.now)
    link.pump()
    assert [type(e) for e in link.events(link.b)] == [MediaUpdated]  # default: answered by the UA
    link.b.relay_reinvites_of(handle)
    link.a.resume(handle, link.now)
    link.pump()
    assert [type(e) for e in link.events(link.b)] == [ReinviteReceived]
    with pytest.raises(CallStateError):
        link.b.reinvite(handle, offer(), link.now)  # the peer's re-INVITE is pending

    other = Link(relay_reinvites=True)
    handle, _ = connected(other)
    other.b.relay_reinvites_of(handle, False)
    other.a.hold(handle, other.now)
    other.pump()
    assert [type(e) for e in other.events(other.b)] == [MediaUpdated]


def test_relayed_reinvite_rejected_keeps_the_call() -> None:
    link, handle = _held_by_caller_with_relay()
    link.b.reject_reinvite(handle, 488, link.now, headers=(("Reason", 'SIP;cause=488;text="no codec"'),))
    link.pump()
    assert link.events(link.a) == [ReinviteFailed(handle, 488, "Not Acceptable Here")]
    assert lines(link.log)[-2:] == ["b: SIP/2.0 488 Not Acceptable Here", "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0"]
    link.a.resume(handle, link.now)  # the dialog is free again on both sides
    link.pump()
    assert [type(e) for e in link.events(link.b)] == [ReinviteReceived]
    with pytest.raises(ValueError):
        link.b.reject_reinvite(handle, 200, link.now)


def test_offerless_relayed_reinvite_gets_the_engines_offer_and_the_answer_in_the_ack() -> None:
    link = Link(relay_reinvites=True)
    handle, _ = connected(link)
    dialog = link.a.call(handle).dialog
    assert dialog is not None
    reinvite = dialog.create_request("INVITE", contact=link.a.contact("alice"))
    link.a.tl.send_request(reinvite, B, link.now)
    link.pump()
    assert link.events(link.b) == [ReinviteReceived(handle, None, None, ())]
    link.b.answer_reinvite(handle, offer(30004), link.now)
    ok = parse(link.b.datagrams_to_send()[-1][0])
    assert isinstance(ok, Response) and ok.status == 200
    offered = SessionDescription.parse(ok.body)
    answer = answer_offer(offered, "127.0.0.1", 20004, session_id="111", version=3)
    ack = dialog.create_request("ACK", cseq=reinvite.cseq.seq, body=bytes(answer), content_type="application/sdp")
    link.a.tl.prepare_request(ack, "UDP")
    link.b.receive(ack, A, link.now)
    (updated,) = link.events(link.b)
    assert isinstance(updated, MediaUpdated) and updated.media.port == 20004


def test_cancel_of_a_relayed_reinvite_is_200_and_487() -> None:
    link, handle = _held_by_caller_with_relay()
    pending = link.a.call(handle).reinvite
    assert pending is not None
    link.a.tl.send_request(pending.request.create_cancel(), B, link.now)
    link.pump()
    assert lines(link.log)[-4:] == [
        "a: CANCEL sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 200 OK",
        "b: SIP/2.0 487 Request Terminated",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    assert link.events(link.b) == [ReinviteCancelled(handle)]
    assert link.events(link.a) == [ReinviteFailed(handle, 487, "Request Terminated")]
    assert link.b.call(handle).state == "confirmed" and link.b.call(handle).reinvite is None


@pytest.mark.parametrize("who", ["a", "b"])
def test_bye_while_a_relayed_reinvite_is_pending_answers_it_487(who: str) -> None:
    link, handle = _held_by_caller_with_relay()
    link.log.clear()
    link.ua(who).bye(handle, link.now)
    link.pump()
    sent_by_b = [line for line in lines(link.log) if line.startswith("b: ")]
    if who == "a":  # §15.1.2: 200 to the BYE, 487 to the pending re-INVITE
        assert sent_by_b == ["b: SIP/2.0 200 OK", "b: SIP/2.0 487 Request Terminated"]
    else:  # our own hang-up answers it first, then the BYE goes out
        assert sent_by_b == ["b: SIP/2.0 487 Request Terminated", "b: BYE sip:alice@127.0.0.1:5061 SIP/2.0"]
    assert [type(e) for e in link.events(link.b)] == [CallEnded]
    assert handle not in link.b._calls


# ------------------------------------------------------------------------------------------ BYE on an early dialog


def test_bye_on_the_early_dialog_ends_the_invite_with_487() -> None:
    link = Link()
    handle, incoming = start_call(link)
    link.b.ring(incoming.call, link.now)
    link.pump()
    link.events(link.a)
    key = link.b.call(handle).invite_key
    early = link.a.call(handle).dialog  # made by our 180 (§12.1.2)
    assert early is not None
    link.log.clear()
    link.a.tl.send_request(early.create_request("BYE"), B, link.now)  # the caller hangs up, without a CANCEL
    link.pump()
    assert lines(link.log) == [
        "a: BYE sip:bob@127.0.0.1:5062 SIP/2.0",
        "b: SIP/2.0 200 OK",
        "b: SIP/2.0 487 Request Terminated",
        "a: ACK sip:bob@127.0.0.1:5062 SIP/2.0",
    ]
    ok, terminated = parse(link.log[1][1]), parse(link.log[2][1])
    assert isinstance(ok, Response) and str(ok.cseq) == "2 BYE"
    assert isinstance(terminated, Response) and str(terminated.cseq) == "1 INVITE"
    assert terminated.to.tag == early.id.remote_tag
    assert link.events(link.b) == [CallCancelled(handle, "BYE")]
    assert link.events(link.a) == [CallFailed(handle, 487, "Request Terminated")]
    assert link.b.tl.state(key) == "confirmed"  # the ACK arrived; no longer Proceeding
    link.advance(link.now + 5.0)  # Timer I (T4)
    assert link.b.tl.state(key) is None
    with pytest.raises(CallStateError):
        link.b.answer(handle, answer_for(incoming), link.now)  # the call is gone for the engine too


# ------------------------------------------------------------------------------------------ CANCEL after our final


@pytest.mark.parametrize("final", ["reject", "early BYE"])
def test_cancel_after_our_final_response_is_200_with_the_same_tag(final: str) -> None:
    link = Link()
    handle, incoming = start_call(link)
    invite = link.a.call(handle).invite
    if final == "reject":
        link.b.reject(handle, 486, link.now)
    else:
        link.b.ring(handle, link.now)
        link.pass_("b")
        early = link.a.call(handle).dialog
        assert early is not None
        link.a.tl.send_request(early.create_request("BYE"), B, link.now)
        link.pass_("a")  # b: 200 to the BYE, 487 to the INVITE, queued and not delivered yet
    link.log.clear()
    link.a.tl.send_request(invite.create_cancel(), B, link.now)  # crossed our final on the wire
    link.pass_("a")
    sent = [m for m in map(parse, (d for d, _ in link.b.datagrams_to_send())) if isinstance(m, Response)]
    (final_response,) = [m for m in sent if m.cseq.method == "INVITE" and m.status >= 300]
    (cancel_reply,) = [m for m in sent if m.cseq.method == "CANCEL"]
    assert cancel_reply.status == 200  # not 481: the INVITE's transaction is still there (§9.2)
    assert final_response.status == (486 if final == "reject" else 487)
    assert cancel_reply.to.tag == final_response.to.tag is not None


def test_cancel_after_the_invite_transaction_ended_is_481() -> None:
    link = Link()
    handle, incoming = start_call(link)
    invite = link.a.call(handle).invite
    link.b.reject(handle, 486, link.now)
    link.pump()
    link.advance(link.now + 33.0)  # Timer I: the INVITE server transaction is gone
    link.log.clear()
    link.a.tl.send_request(invite.create_cancel(), B, link.now)
    link.pass_("a")
    (reply,) = [parse(d) for d, _ in link.b.datagrams_to_send()]
    assert isinstance(reply, Response) and reply.status == 481


def test_remembered_final_tags_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uas, "FINAL_TAGS_KEPT", 2)
    link = Link()
    for _ in range(3):
        handle, _incoming = start_call(link)
        link.b.reject(handle, 486, link.now)
        link.pump()
    assert len(link.b._final_tags) == 2


def _live_objects() -> Counter[str]:
    """Live objects of the SIP stack's types and the containers it builds (not the test runner's weakrefs...)."""
    gc.collect()
    kinds = (tuple, list, dict, set)
    ours = [o for o in gc.get_objects() if type(o) in kinds or str(type(o).__module__).startswith("callplane")]
    return Counter(type(o).__name__ for o in ours)


def test_a_finished_call_leaves_only_its_two_transactions_until_their_timers() -> None:
    """What a finished call costs the UAS while RFC 3261 still needs it: the INVITE server transaction (Accepted, to
    absorb retransmitted INVITEs until Timer L) and the BYE's (Completed, to answer retransmitted BYEs until Timer J),
    each with its key and heap entries; the UA keeps nothing of the call. After 64*T1 nothing at all is left."""
    link = Link()
    calls = 40

    def one_call() -> None:
        handle, _incoming = connected(link)
        link.a.bye(handle, link.now)
        link.pump()
        link.events(link.a)
        link.events(link.b)

    for _ in range(5):  # warm the memo tables and the interpreter's free lists
        one_call()
    link.advance(link.now + 33.0)
    before = _live_objects()
    for _ in range(calls):
        one_call()
    ua = link.b
    assert (ua._calls, ua._by_call_id, ua._by_server_key, ua._client, ua._tokens, ua._final_tags) == ({},) * 6
    kinds = Counter(type(txn).__name__ for txn in ua.tl._servers.values())
    assert kinds == {"_ServerInvite": calls, "_ServerNonInvite": calls} and not ua.tl._clients
    assert ua.tl.pending_timers <= 3 * calls  # Timers L and J, and the 2xx retransmission cancelled by the ACK
    grown = _live_objects() - before
    # Both sides together (the UAC keeps its INVITE and BYE client transactions too): counted, not timed. The UAC's
    # INVITE transaction in Accepted no longer holds the INVITE (a Request, its Headers and lines: 12 objects).
    assert sum(grown.values()) <= 22 * calls, grown.most_common(10)
    accepted = [t for t in link.a.tl._clients.values() if t.key.method == "INVITE"]
    assert len(accepted) == calls and all(t.state == "accepted" and t.last is None for t in accepted)
    del accepted
    link.advance(link.now + 33.0)
    assert len(ua.tl) == 0 and ua.tl.pending_timers == 0 and len(link.a.tl) == 0
    left = _live_objects() - before
    assert sum(left.values()) <= 3 * calls, left.most_common(10)  # bounded memo tables (parsed From/To values)
